//! Page tokens for list RPCs (`page_size` / `page_token` /
//! `next_page_token`, AIP-158): keyset pagination behind an opaque token.
//!
//! Every list is ordered by a unique key (for lists ordered by time, the
//! instant plus an id). A token carries the key of the last row returned,
//! so the next page starts strictly after it: rows inserted meanwhile never
//! shift a page (an offset would repeat or skip rows) and no page scans the
//! rows before it. The token is base64url of a small JSON document that
//! also fingerprints the request's filters: a token is refused with a
//! request whose filters differ from the one that issued it. Tokens are
//! checked, never trusted — their values only ever travel as bound
//! parameters.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Micros;

/// One component of a row's sort key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// An integer or an instant.
    Int(i64),
    /// Text, such as an id.
    Text(String),
}

impl From<i64> for Key {
    fn from(v: i64) -> Self {
        Key::Int(v)
    }
}

impl From<Micros> for Key {
    fn from(v: Micros) -> Self {
        Key::Int(v.as_micros())
    }
}

impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Key::Text(v.to_owned())
    }
}

impl From<&String> for Key {
    fn from(v: &String) -> Self {
        Key::Text(v.clone())
    }
}

/// What a token holds.
#[derive(Serialize, Deserialize)]
struct Token {
    /// The sort key of the last row of the previous page.
    k: Vec<Key>,
    /// Fingerprint of the filters of the request that issued it.
    f: String,
}

/// A validated page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return.
    pub size: i64,
    /// The key after which this page starts; None for the first page.
    after: Option<Vec<Key>>,
    /// The fingerprint of the request's filters.
    filters: String,
}

/// Why a page request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// Negative page size.
    #[error("page_size must not be negative")]
    Size,
    /// A token this server did not issue, or one issued for other filters.
    #[error("page_token is not a token this server issued for these filters")]
    Token,
}

/// The largest page any list returns.
pub const MAX_PAGE_SIZE: i32 = 1_000;

/// The longest token accepted: a key of a few ids, with room to spare.
const MAX_TOKEN_LEN: usize = 2_048;

impl Page {
    /// Reads `page_size` (0 means `default`, capped at [`MAX_PAGE_SIZE`])
    /// and `page_token`. `filters` describes the request's filters (any
    /// stable text, e.g. their values joined); a token must come back with
    /// the same filters. `key_len` is the number of components of the
    /// list's sort key.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        default: i32,
        filters: &str,
        key_len: usize,
    ) -> Result<Self, PageError> {
        if page_size < 0 {
            return Err(PageError::Size);
        }
        let size = if page_size == 0 {
            default
        } else {
            page_size.min(MAX_PAGE_SIZE)
        };
        let filters = fingerprint(filters);
        let after = if page_token.is_empty() {
            None
        } else {
            if page_token.len() > MAX_TOKEN_LEN {
                return Err(PageError::Token);
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| PageError::Token)?;
            let token: Token = serde_json::from_slice(&bytes).map_err(|_| PageError::Token)?;
            if token.f != filters || token.k.len() != key_len {
                return Err(PageError::Token);
            }
            Some(token.k)
        };
        Ok(Self {
            size: i64::from(size),
            after,
            filters,
        })
    }

    /// The LIMIT to query: one more than the page, to learn whether another
    /// page follows without a COUNT.
    pub fn limit(&self) -> i64 {
        self.size + 1
    }

    /// 1 when the page starts after a key (bind it as the flag of
    /// `($n = 0 OR (a, b) > ($m, $o))`), 0 for the first page.
    pub fn has_cursor(&self) -> i64 {
        i64::from(self.after.is_some())
    }

    /// Component `i` of the cursor as an integer (0 on the first page,
    /// where the flag makes it irrelevant).
    pub fn int(&self, i: usize) -> i64 {
        match self.after.as_ref().and_then(|k| k.get(i)) {
            Some(Key::Int(v)) => *v,
            _ => 0,
        }
    }

    /// Component `i` of the cursor as an instant.
    pub fn instant(&self, i: usize) -> Micros {
        Micros::from_micros(self.int(i))
    }

    /// Component `i` of the cursor as text ("" on the first page).
    pub fn text(&self, i: usize) -> String {
        match self.after.as_ref().and_then(|k| k.get(i)) {
            Some(Key::Text(v)) => v.clone(),
            Some(Key::Int(v)) => v.to_string(),
            None => String::new(),
        }
    }

    /// Trims the extra row and returns the next token ("" on the last
    /// page), made from the sort key of the last row kept.
    pub fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> Vec<Key>) -> String {
        if rows.len() as i64 <= self.size {
            return String::new();
        }
        rows.truncate(self.size as usize);
        match rows.last() {
            Some(last) => {
                let token = Token {
                    k: key(last),
                    f: self.filters.clone(),
                };
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("tokens serialize"))
            }
            None => String::new(),
        }
    }
}

fn fingerprint(filters: &str) -> String {
    let digest = Sha256::digest(filters.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &i64) -> Vec<Key> {
        vec![Key::Int(*n), Key::Text(format!("id{n}"))]
    }

    #[test]
    fn pages_through_rows_by_key() {
        let page = Page::parse(2, "", 50, "f", 2).unwrap();
        assert_eq!(page.has_cursor(), 0);
        let mut rows = vec![1, 2, 3];
        let token = page.finish(&mut rows, key);
        assert_eq!(rows, [1, 2]);
        let next = Page::parse(2, &token, 50, "f", 2).unwrap();
        assert_eq!(
            (next.has_cursor(), next.int(0), next.text(1)),
            (1, 2, "id2".into())
        );
        let mut last = vec![3];
        assert_eq!(next.finish(&mut last, key), "");
    }

    #[test]
    fn defaults_caps_and_refusals() {
        assert_eq!(Page::parse(0, "", 50, "", 1).unwrap().size, 50);
        assert_eq!(Page::parse(5_000, "", 50, "", 1).unwrap().size, 1_000);
        assert_eq!(Page::parse(-1, "", 50, "", 1), Err(PageError::Size));
        assert_eq!(Page::parse(10, "abc", 50, "", 1), Err(PageError::Token));
        assert_eq!(Page::parse(10, "10", 50, "", 1), Err(PageError::Token));
        let long = "A".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(Page::parse(10, &long, 50, "", 1), Err(PageError::Token));
    }

    #[test]
    fn a_token_only_serves_the_filters_that_issued_it() {
        let page = Page::parse(1, "", 50, "state=planned", 2).unwrap();
        let token = page.finish(&mut vec![1, 2], key);
        assert!(Page::parse(1, &token, 50, "state=planned", 2).is_ok());
        assert_eq!(
            Page::parse(1, &token, 50, "state=validated", 2),
            Err(PageError::Token)
        );
        assert_eq!(
            Page::parse(1, &token, 50, "state=planned", 3),
            Err(PageError::Token)
        );
    }
}
