//! The admin listener's routes by path shape: which handler a request's path and query name. No
//! request reaches a handler without a route here; an unknown shape is a 404.

/// A route the listener knows, by path shape.
pub(crate) enum Route {
    Metrics,
    Latency,
    Parity(Option<String>),
    Healthz,
    Readyz,
    Targets,
    Target(String),
    Toggle(String, bool),
    /// `/targets/{name}/ring?key=K`: the group and the `key` values asked for.
    Ring(String, Vec<String>),
    Reload,
    Page,
    PageAsset(&'static str, &'static str),
    Status(Option<String>),
    Record,
    RecordStart,
    RecordStop,
    Tap,
    /// `/top?by=..&n=..&window=..`: the query as given.
    Top(String),
    Unknown,
}

pub(crate) fn route_of(path_and_query: &str) -> Route {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let primary = query_values(query, "primary").into_iter().next();
    match path {
        "/" => Route::Page,
        "/status.css" => Route::PageAsset("text/css; charset=utf-8", crate::report::status::CSS),
        "/status.js" => {
            Route::PageAsset("text/javascript; charset=utf-8", crate::report::status::JS)
        }
        "/status.json" => Route::Status(primary),
        "/metrics" => Route::Metrics,
        "/parity" => Route::Parity(primary),
        "/latency" => Route::Latency,
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/targets" | "/targets/" => Route::Targets,
        "/-/reload" => Route::Reload,
        "/record" => Route::Record,
        "/record/start" => Route::RecordStart,
        "/record/stop" => Route::RecordStop,
        "/tap" => Route::Tap,
        "/top" => Route::Top(query.to_owned()),
        _ => {
            let Some(rest) = path.strip_prefix("/targets/") else {
                return Route::Unknown;
            };
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .ok()
            };
            match rest.rsplit_once('/') {
                Some((name, "enable")) => {
                    decode(name).map_or(Route::Unknown, |n| Route::Toggle(n, true))
                }
                Some((name, "disable")) => {
                    decode(name).map_or(Route::Unknown, |n| Route::Toggle(n, false))
                }
                Some((name, "ring")) => decode(name).map_or(Route::Unknown, |n| {
                    Route::Ring(n, query_values(query, "key"))
                }),
                Some(_) => Route::Unknown,
                None => decode(rest).map_or(Route::Unknown, Route::Target),
            }
        }
    }
}

/// The decoded values of `name=` in a query string (`+` is a space, as forms send it).
fn query_values(query: &str, name: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}
