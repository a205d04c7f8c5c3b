//! Reading a request's target, whatever the WASI of the handler: `guest/demos/http` and
//! `http-p3`, and their no-lock twins, include this file.

/// Splits a request's `path?query`.
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// The value of `name` in a query string, if it is there.
pub fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Whether the query string names `name`, with or without a value.
pub fn has(query: &str, name: &str) -> bool {
    param(query, name).is_some()
}
