//! Checks for everything user-supplied that may end up in a path or a name.

use thiserror::Error;

/// Why an id or path component was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    /// The value is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What was checked (e.g. "pod sandbox id").
        what: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{what} is longer than {max} bytes")]
    TooLong {
        /// What was checked.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The value holds a character that could escape a directory or break a name.
    #[error("{what} {value:?} contains a character outside [A-Za-z0-9._-] or is . or ..")]
    BadChars {
        /// What was checked.
        what: &'static str,
        /// The refused value.
        value: String,
    },
}

/// Longest id or name component accepted (a filesystem name is 255 bytes).
pub const MAX_COMPONENT: usize = 253;

/// Checks that `value` is safe as one path component and as a containerd id:
/// non-empty, at most [`MAX_COMPONENT`] bytes, only `[A-Za-z0-9._-]`, not `.`/`..`.
pub fn check_component(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_COMPONENT {
        return Err(IdError::TooLong {
            what,
            max: MAX_COMPONENT,
        });
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok_chars || value == "." || value == ".." {
        return Err(IdError::BadChars {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// A new random 64-hex-digit id, the shape containerd's CRI plugin gives
/// sandboxes and containers.
pub fn generate_id() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `buf` from the kernel's random source.
fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    // /dev/urandom never blocks after boot and is always present on Linux; a
    // failure here means a broken host, where a time-seeded fallback still
    // gives distinct ids.
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok();
    if !ok {
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(std::process::id());
        for b in buf.iter_mut() {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}

/// Why an id (or id prefix) given in a request names no single object.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrefixError {
    /// The id is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What was looked up (e.g. "container id").
        what: &'static str,
    },
    /// More than one id starts with the prefix.
    #[error("{what} prefix {prefix:?} is ambiguous: it starts more than one id")]
    Ambiguous {
        /// What was looked up.
        what: &'static str,
        /// The prefix given.
        prefix: String,
    },
}

/// Resolves an id prefix against known ids the way the CRI tools and
/// containerd's CRI plugin do: an exact match wins, otherwise the unique id
/// starting with `prefix`. `Ok(None)`: no id matches (callers decide
/// whether that is NotFound or, for stop/remove, success); an empty or
/// ambiguous prefix is an error, never silently "not found".
pub fn resolve_prefix<'a, I>(
    what: &'static str,
    prefix: &str,
    ids: I,
) -> Result<Option<&'a str>, PrefixError>
where
    I: IntoIterator<Item = &'a str>,
{
    if prefix.is_empty() {
        return Err(PrefixError::Empty { what });
    }
    let mut found = None;
    let mut ambiguous = false;
    for id in ids {
        if id == prefix {
            return Ok(Some(id));
        }
        if id.starts_with(prefix) {
            ambiguous |= found.is_some();
            found = Some(id);
        }
    }
    if ambiguous {
        return Err(PrefixError::Ambiguous {
            what,
            prefix: prefix.to_string(),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert!(check_component("id", "abc-DEF_1.2").is_ok());
        assert!(check_component("id", &generate_id()).is_ok());
    }

    #[test]
    fn refuses_traversal_and_separators() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "a b", "ä"] {
            assert!(check_component("id", bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            check_component("id", &"a".repeat(300)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn generated_ids_are_distinct_hex() {
        let a = generate_id();
        let b = generate_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn prefix_resolution() {
        let ids = ["abc123", "abd456", "x", "xy"];
        let r = |p| resolve_prefix("id", p, ids);
        assert_eq!(r("abc"), Ok(Some("abc123")));
        assert_eq!(r("abc123"), Ok(Some("abc123")));
        assert!(matches!(r("ab"), Err(PrefixError::Ambiguous { .. })));
        // An exact id wins even where it is also a prefix of another.
        assert_eq!(r("x"), Ok(Some("x")));
        assert_eq!(resolve_prefix("id", "x", ["xy", "x"]), Ok(Some("x")));
        assert_eq!(r("zz"), Ok(None));
        assert_eq!(r(""), Err(PrefixError::Empty { what: "id" }));
        let msg = r("ab").unwrap_err().to_string();
        assert!(msg.contains("\"ab\"") && msg.contains("ambiguous"), "{msg}");
    }
}
