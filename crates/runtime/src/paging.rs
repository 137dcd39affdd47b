//! Page tokens for list RPCs: `page_size` / `page_token` /
//! `next_page_token`. A token is the offset of the next row, which is enough
//! for lists ordered by an immutable key; it is checked, never trusted.

/// A validated page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return.
    pub size: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Why a page request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// Negative page size.
    #[error("page_size must not be negative")]
    Size,
    /// A token this server did not issue.
    #[error("page_token is not a token this server issued")]
    Token,
}

/// The largest page any list returns.
pub const MAX_PAGE_SIZE: i32 = 1_000;

impl Page {
    /// Reads `page_size` (0 means `default`, capped at [`MAX_PAGE_SIZE`])
    /// and `page_token`.
    pub fn parse(page_size: i32, page_token: &str, default: i32) -> Result<Self, PageError> {
        if page_size < 0 {
            return Err(PageError::Size);
        }
        let size = if page_size == 0 {
            default
        } else {
            page_size.min(MAX_PAGE_SIZE)
        };
        let offset = if page_token.is_empty() {
            0
        } else {
            page_token
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or(PageError::Token)?
        };
        Ok(Self {
            size: i64::from(size),
            offset,
        })
    }

    /// The LIMIT to query: one more than the page, to learn whether another
    /// page follows without a COUNT.
    pub fn limit(&self) -> i64 {
        self.size + 1
    }

    /// Trims the extra row and returns the next token ("" on the last page).
    pub fn finish<T>(&self, rows: &mut Vec<T>) -> String {
        if rows.len() as i64 > self.size {
            rows.truncate(self.size as usize);
            (self.offset + self.size).to_string()
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_rows() {
        let page = Page::parse(2, "", 50).unwrap();
        let mut rows = vec![1, 2, 3];
        assert_eq!(page.finish(&mut rows), "2");
        assert_eq!(rows, [1, 2]);
        let next = Page::parse(2, "2", 50).unwrap();
        assert_eq!(next.offset, 2);
        let mut last = vec![3];
        assert_eq!(next.finish(&mut last), "");
    }

    #[test]
    fn defaults_caps_and_refusals() {
        assert_eq!(Page::parse(0, "", 50).unwrap().size, 50);
        assert_eq!(Page::parse(5_000, "", 50).unwrap().size, 1_000);
        assert_eq!(Page::parse(-1, "", 50), Err(PageError::Size));
        assert_eq!(Page::parse(10, "abc", 50), Err(PageError::Token));
        assert_eq!(Page::parse(10, "-5", 50), Err(PageError::Token));
    }
}
