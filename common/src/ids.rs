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

/// Resolves an id prefix against known ids the way the CRI tools do: an exact
/// match wins, otherwise the unique id starting with `prefix`.
pub fn resolve_prefix<'a, I>(prefix: &str, ids: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    if prefix.is_empty() {
        return None;
    }
    let mut found = None;
    for id in ids {
        if id == prefix {
            return Some(id);
        }
        if id.starts_with(prefix) {
            if found.is_some() {
                return None;
            }
            found = Some(id);
        }
    }
    found
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
        let ids = ["abc123", "abd456", "x"];
        assert_eq!(resolve_prefix("abc", ids), Some("abc123"));
        assert_eq!(resolve_prefix("ab", ids), None, "ambiguous");
        assert_eq!(resolve_prefix("x", ids), Some("x"));
        assert_eq!(resolve_prefix("zz", ids), None);
        assert_eq!(resolve_prefix("", ids), None);
    }
}
