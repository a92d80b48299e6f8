//! List pagination as in Google's AIP-158: `page_size` (0 means the default, larger
//! than the maximum is capped, negative is an error) and an opaque `page_token` that
//! resumes after the last item of the previous page.

use crate::ValidationError;
use crate::validation::Violations;

/// Items per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; bigger requests are capped.
pub const MAX_PAGE_SIZE: usize = 100;

/// A validated page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items to return.
    pub size: usize,
    /// Resume after this key (the sort key of the previous page's last item).
    pub after: Option<String>,
}

impl PageRequest {
    /// Validates the request's `page_size` and `page_token` fields.
    pub fn new(page_size: i32, page_token: &str) -> Result<Self, ValidationError> {
        let mut violations = Violations::new();
        let page = Self::parse(page_size, page_token, &mut violations);
        violations.finish()?;
        Ok(page.expect("no violations means a page"))
    }

    /// Validates `page_size` and `page_token` into `violations`, next to the request's
    /// other fields; `None` if either is invalid.
    pub fn parse(page_size: i32, page_token: &str, violations: &mut Violations) -> Option<Self> {
        let size_ok = page_size >= 0;
        violations.check(size_ok, "page_size", "must not be negative");
        let after = if page_token.is_empty() {
            None
        } else {
            let key = decode_token(page_token);
            violations.check(
                key.is_some(),
                "page_token",
                "is not a token returned by a previous call",
            );
            Some(key?)
        };
        let size = match usize::try_from(page_size).ok()? {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        size_ok.then_some(Self { size, after })
    }

    /// Positions of this page in a log kept in creation order, oldest first: up to
    /// `size + 1` of `positions` (ascending) after the previous page's last key.
    pub fn oldest_first<'a>(&self, positions: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
        // A key we did not make matches nothing rather than failing.
        let start = self.after.as_deref().map_or(0, |after| {
            after.parse().map_or(positions.len(), |after: usize| {
                positions.partition_point(|&i| i <= after)
            })
        });
        positions[start..].iter().copied().take(self.size + 1)
    }

    /// The same, newest first: up to `size + 1` positions below the previous page's
    /// last key.
    pub fn newest_first<'a>(&self, positions: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
        let end = self.after.as_deref().map_or(positions.len(), |after| {
            after
                .parse()
                .map_or(0, |after: usize| positions.partition_point(|&i| i < after))
        });
        positions[..end].iter().rev().copied().take(self.size + 1)
    }

    /// Splits `items` (one more than `size` were fetched, if available) into this page
    /// and the token of the next one (empty on the last page).
    pub fn finish<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> &str) -> (Vec<T>, String) {
        if items.len() <= self.size {
            return (items, String::new());
        }
        items.truncate(self.size);
        let token = items
            .last()
            .map(|last| encode_token(key(last)))
            .unwrap_or_default();
        (items, token)
    }
}

/// The page key of the item at `position` in a log kept in creation order:
/// zero-padded, so keys sort like the numbers.
pub fn position_key(position: usize) -> String {
    format!("{position:016}")
}

const TOKEN_PREFIX: &str = "p1.";

/// Hex, behind a version prefix: opaque to callers and safe in URLs.
fn encode_token(key: &str) -> String {
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + key.len() * 2);
    token.push_str(TOKEN_PREFIX);
    for byte in key.bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

fn decode_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix(TOKEN_PREFIX)?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_page_oldest_or_newest_first() {
        let positions = [1, 3, 4, 7, 9];
        let page = |after: Option<usize>| PageRequest {
            size: 2,
            after: after.map(position_key),
        };
        let oldest: Vec<_> = page(None).oldest_first(&positions).collect();
        assert_eq!(oldest, [1, 3, 4]);
        assert_eq!(
            page(Some(3)).oldest_first(&positions).collect::<Vec<_>>(),
            [4, 7, 9]
        );
        assert_eq!(page(Some(9)).oldest_first(&positions).count(), 0);
        assert_eq!(
            page(None).newest_first(&positions).collect::<Vec<_>>(),
            [9, 7, 4]
        );
        assert_eq!(
            page(Some(7)).newest_first(&positions).collect::<Vec<_>>(),
            [4, 3, 1]
        );
        assert_eq!(page(Some(1)).newest_first(&positions).count(), 0);
        let foreign = PageRequest {
            size: 2,
            after: Some("x".into()),
        };
        assert_eq!(foreign.oldest_first(&positions).count(), 0);
        assert_eq!(foreign.newest_first(&positions).count(), 0);
    }

    #[test]
    fn sizes_follow_aip_158() {
        assert_eq!(PageRequest::new(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::new(7, "").unwrap().size, 7);
        assert_eq!(PageRequest::new(100_000, "").unwrap().size, MAX_PAGE_SIZE);
        let err = PageRequest::new(-1, "").unwrap_err();
        assert_eq!(err.violations[0].field, "page_size");
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let page = PageRequest::new(2, "").unwrap();
        let (items, token) = page.finish(vec!["a", "b", "c"], |s| s);
        assert_eq!(items, ["a", "b"]);
        assert_eq!(
            PageRequest::new(2, &token).unwrap().after.as_deref(),
            Some("b")
        );
        let (_, last) = page.finish(vec!["a", "b"], |s| s);
        assert_eq!(last, "");
        for bad in ["b", "p1.", "p1.zz", "p1.6", "p1.ff"] {
            let err = PageRequest::new(2, bad).unwrap_err();
            assert_eq!(err.violations[0].field, "page_token", "{bad}");
        }
    }
}
