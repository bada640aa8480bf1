//! The addresses a client's address list stands for: `host:port[,host:port...]`, each name
//! resolved to every address it has.

use std::net::SocketAddr;

/// The entries of `list`, trimmed, empty ones skipped.
pub(crate) fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// Whether every entry of `list` is a numeric address (nothing to resolve, ever).
pub(crate) fn is_numeric(list: &str) -> bool {
    entries(list).all(|e| e.parse::<SocketAddr>().is_ok())
}

/// The endpoints' addresses for `list`, without repeats, in order: a numeric address as it
/// is; a name, each address it resolves to; a name that does not resolve (or resolves to
/// nothing), as it is, so that connecting to it fails with its own error. An empty list
/// stands for itself too, for the same reason.
pub(crate) async fn resolve(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |addr: String| {
        if !out.contains(&addr) {
            out.push(addr);
        }
    };
    for entry in entries(list) {
        if entry.parse::<SocketAddr>().is_ok() {
            add(entry.to_owned());
            continue;
        }
        match async_std::net::ToSocketAddrs::to_socket_addrs(entry).await {
            Ok(found) => {
                let found: Vec<SocketAddr> = found.collect();
                if found.is_empty() {
                    add(entry.to_owned());
                }
                for addr in found {
                    add(addr.to_string());
                }
            }
            Err(_) => add(entry.to_owned()),
        }
    }
    if out.is_empty() {
        out.push(list.to_owned());
    }
    out
}

/// The endpoints' addresses for a numeric `list` (see [`is_numeric`]), without resolving.
pub(crate) fn numeric(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in entries(list) {
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_owned());
        }
    }
    if out.is_empty() {
        out.push(list.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_trim_and_drop_repeats() {
        let list = "127.0.0.1:1, 127.0.0.1:2,,127.0.0.1:1";
        assert!(is_numeric(list));
        assert_eq!(numeric(list), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(!is_numeric("localhost:1,127.0.0.1:2"));
        assert_eq!(numeric(""), [""]);
    }

    #[test]
    fn names_resolve_to_each_address_and_unknown_names_stay() {
        futures_lite::future::block_on(async {
            let got = resolve("127.0.0.1:5,localhost:7,no-such-host.invalid:9").await;
            assert_eq!(got.first().map(String::as_str), Some("127.0.0.1:5"));
            assert!(got
                .iter()
                .any(|a| a.ends_with(":7") && !a.starts_with("localhost")));
            assert_eq!(
                got.last().map(String::as_str),
                Some("no-such-host.invalid:9")
            );
        });
    }
}
