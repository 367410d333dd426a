//! statsd over a byte stream, made datagrams again: newline-delimited lines (statsd's TCP
//! servers) and DogStatsD's length-prefixed frames (its Unix stream socket).
//!
//! [`Lines`] joins lines split anywhere across reads and hands each complete one on; a line
//! longer than its bound is dropped whole (counted) and the stream goes on at the next newline.
//! A trailing `\r` is data, as statsd keeps it; empty lines are skipped. [`Packer`] joins lines
//! into datagrams of up to a size, `\n` between them and none after the last (Etsy statsd reads
//! a trailing newline as an empty bad line), never splitting one. [`Frames`] reads DogStatsD's
//! framing: a little-endian `u32` length, then that many bytes, one datagram per frame.
//! Every buffer is bounded by the caller's limit, whatever the peer sends. Pure: no I/O, no
//! allocation after the first frame or line of the largest size. Floor 1; hot for stream listeners.

/// Newline-delimited statsd lines from a byte stream, each at most `max_line` bytes.
#[derive(Debug)]
pub struct Lines {
    /// The start of a line whose newline has not arrived yet.
    carry: Vec<u8>,
    max_line: usize,
    /// Inside a line already over `max_line`: skip to its newline.
    skipping: bool,
}

/// What a stream's bytes held, beyond the lines handed on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Complete lines handed on.
    pub lines: u64,
    /// Lines dropped for being longer than the bound.
    pub too_long: u64,
}

impl Lines {
    /// A splitter whose lines may be up to `max_line` bytes (the `\n` not included).
    pub fn new(max_line: usize) -> Self {
        Self {
            carry: Vec::new(),
            max_line,
            skipping: false,
        }
    }

    /// Bytes held of a line not yet ended.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Feeds the next bytes of the stream; `line` gets each complete, non-empty line in order.
    pub fn feed(&mut self, mut data: &[u8], mut line: impl FnMut(&[u8])) -> Fed {
        let mut fed = Fed::default();
        while let Some(nl) = memchr::memchr(b'\n', data) {
            let (head, rest) = (&data[..nl], &data[nl + 1..]);
            data = rest;
            if std::mem::take(&mut self.skipping) {
                continue; // the end of a line already counted as too long
            }
            if self.carry.is_empty() {
                self.hand_on(head, &mut fed, &mut line);
            } else if self.carry.len() + head.len() > self.max_line {
                self.carry.clear();
                fed.too_long += 1;
            } else {
                let mut joined = std::mem::take(&mut self.carry);
                joined.extend_from_slice(head);
                self.hand_on(&joined, &mut fed, &mut line);
                joined.clear();
                self.carry = joined; // keep the allocation for the next split line
            }
        }
        if !self.skipping && !data.is_empty() {
            if self.carry.len() + data.len() > self.max_line {
                self.carry.clear();
                self.skipping = true;
                fed.too_long += 1;
            } else {
                self.carry.extend_from_slice(data);
            }
        }
        fed
    }

    /// The stream ended cleanly: what is held is its last line.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) -> Fed {
        let mut fed = Fed::default();
        self.skipping = false;
        let last = std::mem::take(&mut self.carry);
        self.hand_on(&last, &mut fed, &mut line);
        fed
    }

    fn hand_on(&self, l: &[u8], fed: &mut Fed, line: &mut impl FnMut(&[u8])) {
        if l.is_empty() {
            return;
        }
        if l.len() > self.max_line {
            fed.too_long += 1;
        } else {
            fed.lines += 1;
            line(l);
        }
    }
}

/// Lines packed into datagrams of up to `limit` bytes: `\n` between lines, none after the last; a
/// line longer than `limit` is a datagram of its own.
#[derive(Debug)]
pub struct Packer {
    buf: Vec<u8>,
    limit: usize,
}

impl Packer {
    /// A packer of datagrams up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Adds one line; `datagram` gets the datagram it completes, if any.
    pub fn push(&mut self, line: &[u8], mut datagram: impl FnMut(&[u8])) {
        let sep = usize::from(!self.buf.is_empty());
        if !self.buf.is_empty() && self.buf.len() + sep + line.len() > self.limit {
            datagram(&self.buf);
            self.buf.clear();
        }
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        self.buf.extend_from_slice(line);
        if self.buf.len() >= self.limit {
            datagram(&self.buf);
            self.buf.clear();
        }
    }

    /// Hands on what is packed so far, if anything.
    pub fn flush(&mut self, mut datagram: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            datagram(&self.buf);
            self.buf.clear();
        }
    }
}

/// DogStatsD's stream framing: each frame a little-endian `u32` length, then the payload.
#[derive(Debug)]
pub struct Frames {
    /// The length prefix, then the payload, of the frame being read.
    buf: Vec<u8>,
    max_frame: usize,
}

/// A frame's length over the bound: the stream cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {len} bytes is over the limit of {max}")]
pub struct FrameTooLong {
    /// The length the prefix gave.
    pub len: u64,
    /// The bound.
    pub max: usize,
    /// Frames handed on by the same `feed` before this one.
    pub handed_on: u64,
}

const PREFIX: usize = 4;

/// A frame's payload and the bytes after it.
type Split<'d> = (&'d [u8], &'d [u8]);

impl Frames {
    /// A reader of frames up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_frame,
        }
    }

    /// Bytes held of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes of the stream; `frame` gets each complete frame's payload (empty
    /// frames are skipped). Returns the number handed on, or the first length over the bound.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut frame: impl FnMut(&[u8]),
    ) -> Result<u64, FrameTooLong> {
        let mut frames = 0;
        let r = self.feed_counting(&mut data, &mut frames, &mut frame);
        r.map(|()| frames).map_err(|e| FrameTooLong {
            handed_on: frames,
            ..e
        })
    }

    fn feed_counting(
        &mut self,
        data: &mut &[u8],
        frames: &mut u64,
        frame: &mut impl FnMut(&[u8]),
    ) -> Result<(), FrameTooLong> {
        while !data.is_empty() {
            // Whole frames straight from `data` while nothing is held.
            if self.buf.is_empty() {
                let d: &[u8] = data;
                match self.whole(d)? {
                    Some((payload, rest)) => {
                        if !payload.is_empty() {
                            *frames += 1;
                            frame(payload);
                        }
                        *data = rest;
                        continue;
                    }
                    None => {
                        self.buf.extend_from_slice(data);
                        return Ok(());
                    }
                }
            }
            // Complete the held frame: its prefix first, then its payload.
            let want = if self.buf.len() < PREFIX {
                PREFIX - self.buf.len()
            } else {
                PREFIX + self.len_of(&self.buf)? - self.buf.len()
            };
            let take = want.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            *data = &data[take..];
            if self.buf.len() >= PREFIX {
                let len = self.len_of(&self.buf)?;
                if self.buf.len() == PREFIX + len {
                    if len > 0 {
                        *frames += 1;
                        frame(&self.buf[PREFIX..]);
                    }
                    self.buf.clear();
                }
            }
        }
        Ok(())
    }

    /// A whole frame at the start of `data`, and what follows it; `None` when it is not all there.
    fn whole<'d>(&self, data: &'d [u8]) -> Result<Option<Split<'d>>, FrameTooLong> {
        if data.len() < PREFIX {
            return Ok(None);
        }
        let len = self.len_of(data)?;
        Ok((data.len() >= PREFIX + len).then(|| {
            let (frame, rest) = data[PREFIX..].split_at(len);
            (frame, rest)
        }))
    }

    fn len_of(&self, prefix: &[u8]) -> Result<usize, FrameTooLong> {
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        match usize::try_from(len) {
            Ok(l) if l <= self.max_frame => Ok(l),
            _ => Err(FrameTooLong {
                len: u64::from(len),
                max: self.max_frame,
                handed_on: 0,
            }),
        }
    }
}

/// The fuzz target's check: any bytes as a stream, cut into reads by its own bytes. Lines come
/// out the same however the stream is cut, none over the bound nor holding a newline, and held
/// bytes stay bounded; frames likewise; packing keeps every line. Panics when one does not hold.
pub fn check_stream(data: &[u8]) {
    let Some((&knob, data)) = data.split_first() else {
        return;
    };
    let max = usize::from(knob % 64) + 1;
    let cut = usize::from(knob / 64) + 1;
    let collect = |chunk: usize| {
        let mut l = Lines::new(max);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut too_long = 0;
        for c in data.chunks(chunk) {
            too_long += l.feed(c, |x| out.push(x.to_vec())).too_long;
            assert!(l.pending() <= max, "a held line stays within the bound");
        }
        too_long += l.finish(|x| out.push(x.to_vec())).too_long;
        (out, too_long)
    };
    let (whole, too_long) = collect(data.len().max(1));
    assert_eq!(
        (whole.clone(), too_long),
        collect(cut),
        "lines do not depend on the reads"
    );
    for line in &whole {
        assert!(!line.is_empty() && line.len() <= max && !line.contains(&b'\n'));
    }
    let mut p = Packer::new(max);
    let mut packed: Vec<u8> = Vec::new();
    for line in &whole {
        p.push(line, |d| {
            assert!(!d.ends_with(b"\n") && (d.len() <= max || !d.contains(&b'\n')));
            packed.extend_from_slice(d);
            packed.push(b'\n');
        });
    }
    p.flush(|d| {
        packed.extend_from_slice(d);
        packed.push(b'\n');
    });
    assert_eq!(
        packed,
        whole
            .join(&b'\n')
            .into_iter()
            .chain((!whole.is_empty()).then_some(b'\n'))
            .collect::<Vec<u8>>(),
        "packing keeps every line"
    );
    let mut f = Frames::new(max);
    for c in data.chunks(cut) {
        let ok = f.feed(c, |x| assert!(!x.is_empty() && x.len() <= max));
        assert!(
            f.pending() <= PREFIX + max,
            "a held frame stays within the bound"
        );
        if ok.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests;
