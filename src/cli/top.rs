//! `udptee top`: the top talkers of a running udptee (its admin listener's `GET /top`), live in the
//! style of `top` on a terminal (refreshed every second; keys switch the grouping), one sample with
//! `--once`, or JSON for scripts.

use std::io::{IsTerminal as _, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};

use super::client::AdminClient;
use crate::config;
use crate::top::tally::By;
use crate::top::{MAX_ROWS, MAX_WINDOW, TopReport, TopRow};

/// `udptee top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The running udptee's admin listener [default: the configuration's with --config, else
    /// 127.0.0.1:8135].
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub admin: Option<String>,
    /// Reads the admin listener's address from this configuration file.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Rank by metric name, by sender (address and port, or a Unix sender's pid), or by series
    /// (name, type and tag set). Live: keys n, s and e switch.
    #[arg(long, value_name = "BY", default_value = "name", value_parser = parse_by)]
    pub by: By,
    /// Rows to show, 1 to 100 [default: what fits the terminal, else 10].
    #[arg(short = 'n', long = "rows", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=MAX_ROWS as i64))]
    pub rows: Option<u16>,
    /// The window ranked: the last whole seconds, 1s to 60s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_window)]
    pub window: Duration,
    /// Prints one sample and exits (the first look at an idle udptee waits a second for one).
    #[arg(long)]
    pub once: bool,
    /// Prints GET /top's JSON: one object per line each second, or one with --once.
    #[arg(long)]
    pub json: bool,
}

fn parse_by(s: &str) -> Result<By, String> {
    By::parse(s).ok_or_else(|| "expected name, sender or series".to_owned())
}

fn parse_window(s: &str) -> Result<Duration, String> {
    let w = config::parse_duration(s)?;
    if w.subsec_nanos() != 0 || w < Duration::from_secs(1) || w > MAX_WINDOW {
        return Err(format!(
            "expected whole seconds from 1s to {}s",
            MAX_WINDOW.as_secs()
        ));
    }
    Ok(w)
}

/// Runs `udptee top` until its end (`--once`) or the user quits; the error is one line.
pub fn run(args: &TopArgs) -> Result<(), String> {
    let client = connect(args)?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    if args.json || args.once || !tty {
        // A sample each second (one with --once): JSON, or the table (cut to a terminal's width).
        let width = terminal::size()
            .ok()
            .filter(|_| tty)
            .map(|(w, _)| usize::from(w));
        let mut out = stdout.lock();
        let mut next = Instant::now();
        loop {
            let r = sample(
                &client,
                args.by,
                args.rows.map_or(10, usize::from),
                args.window,
            )?;
            let mut text = match (args.json, args.once) {
                (true, true) => serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?,
                (true, false) => serde_json::to_string(&r).map_err(|e| e.to_string())?,
                (false, once) => {
                    render(&r, client.addr(), width).join("\n") + if once { "" } else { "\n" }
                }
            };
            text.push('\n');
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
                || args.once
            {
                return Ok(());
            }
            next = pace(next);
        }
    }
    live(&client, args)
}

/// The admin listener to ask: `--admin`, the configuration's, or the default. `GET /top` is a
/// read, open like `/targets`: no token is sent.
fn connect(args: &TopArgs) -> Result<AdminClient, String> {
    let Some(path) = &args.config else {
        let admin = args.admin.as_deref().unwrap_or(config::DEFAULT_ADMIN);
        return AdminClient::new(admin, None);
    };
    let argv = ["udptee", "--config", &path.to_string_lossy()];
    let c = super::Invocation::try_from_iter(argv)
        .map_err(|e| e.to_string())?
        .load()
        .map_err(|e| e.to_string())?;
    let admin = c
        .admin
        .ok_or_else(|| format!("{} has no admin listener (admin = ...)", path.display()))?;
    Ok(AdminClient::at(admin, None))
}

fn sample(client: &AdminClient, by: By, n: usize, window: Duration) -> Result<TopReport, String> {
    let q = format!(
        "/top?by={}&n={}&window={}s",
        by.as_str(),
        n.clamp(1, MAX_ROWS),
        window.as_secs()
    );
    let body = client.get(&q, Some(Duration::from_secs(10)))?;
    let text = body
        .into_with_config()
        .limit(4 << 20)
        .read_to_string()
        .map_err(|e| format!("reading {}'s answer: {e}", client.addr()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} answered {q} with {e}", client.addr()))
}

/// Sleeps until a second after `last`, or returns at once when that is past; the next deadline.
fn pace(last: Instant) -> Instant {
    let next = last + Duration::from_secs(1);
    let now = Instant::now();
    if next > now {
        std::thread::sleep(next - now);
        next
    } else {
        now
    }
}

/// Puts the terminal back however the live view ends.
struct Screen;

impl Screen {
    fn open() -> Result<Self, String> {
        terminal::enable_raw_mode().map_err(|e| format!("the terminal: {e}"))?;
        let s = Self;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(|e| format!("the terminal: {e}"))?;
        Ok(s)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

const KEYS: &str = "q quit  n names  s senders  e series";

/// The live view: a sample a second, drawn over the last; a failed sample is shown on the last
/// line and tried again the next second.
fn live(client: &AdminClient, args: &TopArgs) -> Result<(), String> {
    let _screen = Screen::open()?;
    let mut by = args.by;
    let mut shown: Option<TopReport> = None;
    let mut status = String::from("…");
    let mut next = Instant::now();
    loop {
        let (w, h) = terminal::size().unwrap_or((80, 24));
        if Instant::now() >= next {
            // The header takes 4 lines, "(other)" and the keys 2.
            let fit = usize::from(h).saturating_sub(6).max(1);
            let n = args.rows.map_or(fit, |r| usize::from(r).min(fit));
            match sample(client, by, n, args.window) {
                Ok(r) => {
                    shown = Some(r);
                    status = KEYS.to_owned();
                }
                Err(e) => status = format!("{e} (trying again)"),
            }
            next = Instant::now() + Duration::from_secs(1);
        }
        let mut lines = shown
            .as_ref()
            .map_or_else(Vec::new, |r| render(r, client.addr(), Some(usize::from(w))));
        lines.truncate(usize::from(h).saturating_sub(1));
        draw(&lines, &status, w, h).map_err(|e| format!("the terminal: {e}"))?;
        let wait = next.saturating_duration_since(Instant::now());
        if !event::poll(wait).map_err(|e| format!("the terminal: {e}"))? {
            continue;
        }
        if let Event::Key(k) = event::read().map_err(|e| format!("the terminal: {e}"))? {
            match key(k) {
                Some(Key::Quit) => return Ok(()),
                Some(Key::By(b)) if b != by => {
                    by = b;
                    next = Instant::now();
                }
                _ => {}
            }
        }
    }
}

enum Key {
    Quit,
    By(By),
}

fn key(k: KeyEvent) -> Option<Key> {
    if k.kind != KeyEventKind::Press {
        return None;
    }
    match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
        KeyCode::Char('q' | 'Q') | KeyCode::Esc => Some(Key::Quit),
        KeyCode::Char('n') => Some(Key::By(By::Name)),
        KeyCode::Char('s') => Some(Key::By(By::Sender)),
        KeyCode::Char('e') => Some(Key::By(By::Series)),
        _ => None,
    }
}

fn draw(lines: &[String], status: &str, w: u16, h: u16) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    queue!(out, cursor::MoveTo(0, 0))?;
    for (i, l) in lines.iter().enumerate() {
        queue!(
            out,
            cursor::MoveTo(0, i as u16),
            style::Print(cut(l, usize::from(w))),
            terminal::Clear(terminal::ClearType::UntilNewLine)
        )?;
    }
    queue!(
        out,
        cursor::MoveTo(0, lines.len() as u16),
        terminal::Clear(terminal::ClearType::FromCursorDown),
        cursor::MoveTo(0, h.saturating_sub(1)),
        style::Print(cut(status, usize::from(w)))
    )?;
    out.flush()
}

/// `s` cut to `width` characters.
fn cut(s: &str, width: usize) -> &str {
    s.char_indices().nth(width).map_or(s, |(i, _)| &s[..i])
}

/// A report as text: two header lines, a blank one, the column titles, a row per key and
/// `(other)`; each line cut to `width` when given.
fn render(r: &TopReport, admin: SocketAddr, width: Option<usize>) -> Vec<String> {
    let what = match r.by {
        By::Name => "names",
        By::Sender => "senders",
        By::Series => "series",
    };
    let pct = if r.offered == 0 {
        0.0
    } else {
        100.0 * r.sampled as f64 / r.offered as f64
    };
    let mut lines = vec![
        format!(
            "udptee top - {admin} - by {} - last {}s ({:.1}s sampled: {} of {} datagrams, {pct:.1}%)",
            r.by.as_str(),
            r.window_s,
            r.seconds,
            r.sampled,
            r.offered
        ),
        format!(
            "total: {} datagrams/s, {} lines/s, {}B/s, {} {what}",
            si(r.total.datagrams_per_s),
            si(r.total.lines_per_s),
            si(r.total.bytes_per_s),
            r.keys
        ),
        String::new(),
        format!(
            "{:>6}  {:>8}  {:>8}  {:>8}  {}",
            "SHARE",
            "LINES/S",
            "DGRAMS/S",
            "BYTES/S",
            r.by.as_str().to_uppercase()
        ),
    ];
    let row = |t: &TopRow| {
        format!(
            "{:>5.1}%  {:>8}  {:>8}  {:>8}  {}",
            t.share * 100.0,
            si(t.lines_per_s),
            si(t.datagrams_per_s),
            si(t.bytes_per_s),
            t.key
        )
    };
    lines.extend(r.top.iter().map(row));
    if r.other.lines_per_s > 0.0 || r.other.datagrams_per_s > 0.0 {
        lines.push(row(&r.other));
    }
    if let Some(w) = width {
        for l in &mut lines {
            let end = cut(l, w).len();
            l.truncate(end);
        }
    }
    lines
}

/// A rate in at most 6 characters: `950`, `61.2k`, `1.23M`, `4.50G`.
fn si(v: f64) -> String {
    match v {
        v if v < 1e3 => format!("{v:.0}"),
        v if v < 1e6 => format!("{:.1}k", v / 1e3),
        v if v < 1e9 => format!("{:.2}M", v / 1e6),
        v => format!("{:.2}G", v / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, lines: f64, share: f64) -> TopRow {
        TopRow {
            key: key.into(),
            datagrams_per_s: lines,
            lines_per_s: lines,
            bytes_per_s: lines * 20.0,
            share,
        }
    }

    #[test]
    fn a_report_reads_as_a_table() {
        let r = TopReport {
            by: By::Name,
            window_s: 10,
            seconds: 10.0,
            sampled: 500,
            offered: 1000,
            keys: 3,
            total: row("total", 100_000.0, 1.0),
            top: vec![
                row("api.requests", 50_000.0, 0.5),
                row("db.query", 30_000.0, 0.3),
            ],
            other: row("(other)", 20_000.0, 0.2),
        };
        let lines = render(&r, "127.0.0.1:8135".parse().unwrap(), None);
        assert_eq!(
            lines[0],
            "udptee top - 127.0.0.1:8135 - by name - last 10s (10.0s sampled: 500 of 1000 datagrams, 50.0%)"
        );
        assert_eq!(
            lines[1],
            "total: 100.0k datagrams/s, 100.0k lines/s, 2.00MB/s, 3 names"
        );
        assert_eq!(lines[3], " SHARE   LINES/S  DGRAMS/S   BYTES/S  NAME");
        assert_eq!(
            lines[4],
            " 50.0%     50.0k     50.0k     1.00M  api.requests"
        );
        assert_eq!(lines[6], " 20.0%     20.0k     20.0k    400.0k  (other)");
        let narrow = render(&r, "127.0.0.1:8135".parse().unwrap(), Some(20));
        assert!(narrow.iter().all(|l| l.chars().count() <= 20));
    }

    #[test]
    fn keys_switch_and_quit() {
        let press = |c| KeyEvent::new(c, KeyModifiers::NONE);
        assert!(matches!(key(press(KeyCode::Char('q'))), Some(Key::Quit)));
        assert!(matches!(
            key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Quit)
        ));
        assert!(matches!(
            key(press(KeyCode::Char('s'))),
            Some(Key::By(By::Sender))
        ));
        assert!(key(press(KeyCode::Char('x'))).is_none());
        assert_eq!(cut("héllo", 2), "hé");
    }

    #[test]
    fn windows_are_whole_seconds_within_the_kept_minute() {
        assert_eq!(parse_window("1m").unwrap(), Duration::from_secs(60));
        for bad in ["0s", "61s", "1500ms", "soon"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
