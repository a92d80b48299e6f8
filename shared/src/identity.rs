//! Who a call is made for: the caller the edge authenticated (the gateway, from a
//! bearer token), passed on to the services as gRPC metadata, so that each service
//! enforces what its caller may see and do, whoever calls it.
//!
//! | metadata | value |
//! |---|---|
//! | `x-caller-subject` | the token's subject (`sub`): the customer the caller is |
//! | `x-caller-scopes` | the token's scopes, space-separated |
//!
//! A handler reads the caller with [`caller`] (UNAUTHENTICATED for a malformed one)
//! and decides with [`Caller::may_act_for`]. A call without
//! `x-caller-subject` has no caller: it comes from inside the trust boundary (another
//! service, or a gateway with authentication off) and is not restricted. A call that
//! names a caller is held to it, even one that bypasses the gateway: defence in depth.
//! Services must therefore be reachable only through the gateway and each other
//! (mutual TLS, network policies), which is what makes the metadata trustworthy.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

/// The metadata key of the caller's subject.
pub const SUBJECT: &str = "x-caller-subject";

/// The metadata key of the caller's scopes, space-separated.
pub const SCOPES: &str = "x-caller-scopes";

/// The longest subject accepted, in bytes: a customer id is at most 128.
pub const MAX_SUBJECT_LEN: usize = 256;

/// The longest scope list accepted, in bytes.
pub const MAX_SCOPES_LEN: usize = 1024;

/// An authenticated caller: a subject, which is the customer it acts as, and the
/// scopes it was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    scopes: Vec<String>,
}

impl Caller {
    /// A caller of `subject` with `scopes`. `None` when the subject is empty, longer
    /// than [`MAX_SUBJECT_LEN`], or not visible ASCII (it must travel as ASCII
    /// metadata); scopes that are not visible ASCII are dropped, and the list is cut
    /// at [`MAX_SCOPES_LEN`] bytes.
    pub fn new<'a>(subject: &str, scopes: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        if !is_token(subject) || subject.len() > MAX_SUBJECT_LEN {
            return None;
        }
        let mut length = 0;
        let scopes = scopes
            .into_iter()
            .filter(|scope| is_token(scope))
            .take_while(|scope| {
                length += scope.len() + 1;
                length <= MAX_SCOPES_LEN + 1
            })
            .map(str::to_owned)
            .collect();
        Some(Self {
            subject: subject.to_owned(),
            scopes,
        })
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn grants(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the caller may act for customer `customer`: it is that customer, or
    /// it holds `any_customer_scope` (e.g. `orders:admin`).
    pub fn may_act_for(&self, customer: &str, any_customer_scope: &str) -> bool {
        self.subject == customer || self.grants(any_customer_scope)
    }

    /// Adds the caller to the metadata of an outgoing call.
    pub fn insert_into(&self, metadata: &mut MetadataMap) {
        // Both are visible ASCII (`new`), which is always a valid metadata value.
        if let Ok(subject) = AsciiMetadataValue::try_from(self.subject.as_str()) {
            metadata.insert(SUBJECT, subject);
        }
        if let Ok(scopes) = AsciiMetadataValue::try_from(self.scopes.join(" ")) {
            metadata.insert(SCOPES, scopes);
        }
    }

    /// The caller an incoming call's metadata names: `Ok(None)` without
    /// `x-caller-subject`; UNAUTHENTICATED when it is there but not valid, so that a
    /// malformed identity never passes for no identity.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, Status> {
        let invalid = |what: &str| Status::unauthenticated(format!("{SUBJECT}: {what}"));
        let mut subjects = metadata.get_all(SUBJECT).iter();
        let Some(subject) = subjects.next() else {
            return Ok(None);
        };
        if subjects.next().is_some() {
            return Err(invalid("must be given once"));
        }
        let subject = subject
            .to_str()
            .map_err(|_| invalid("must be visible ASCII"))?;
        let scopes = metadata
            .get(SCOPES)
            .map(|v| v.to_str().unwrap_or_default())
            .unwrap_or_default();
        Self::new(subject, scopes.split_ascii_whitespace())
            .map(Some)
            .ok_or_else(|| {
                invalid(&format!(
                    "must be 1 to {MAX_SUBJECT_LEN} visible ASCII characters"
                ))
            })
    }
}

/// The caller `request`'s metadata names: `None` when it names none;
/// UNAUTHENTICATED when the name is not valid.
pub fn caller<T>(request: &Request<T>) -> Result<Option<Caller>, Status> {
    Caller::from_metadata(request.metadata())
}

fn is_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in pairs {
            metadata.append(*key, value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn a_caller_round_trips_through_metadata() {
        let caller = Caller::new("alice", ["orders:read", "orders:admin"]).unwrap();
        let mut sent = MetadataMap::new();
        caller.insert_into(&mut sent);
        let received = Caller::from_metadata(&sent).unwrap().unwrap();
        assert_eq!(received, caller);
        assert!(received.may_act_for("alice", "none"));
        assert!(received.may_act_for("bob", "orders:admin"));
        assert!(!received.may_act_for("bob", "notifications:admin"));
    }

    #[test]
    fn no_subject_is_no_caller_but_a_bad_one_is_refused() {
        assert_eq!(Caller::from_metadata(&metadata(&[])).unwrap(), None);
        let scopes_only = metadata(&[(SCOPES, "orders:admin")]);
        assert_eq!(Caller::from_metadata(&scopes_only).unwrap(), None);
        let long = "a".repeat(MAX_SUBJECT_LEN + 1).leak();
        for bad in [
            vec![(SUBJECT, "")],
            vec![(SUBJECT, "a b")],
            vec![(SUBJECT, &*long)],
            vec![(SUBJECT, "alice"), (SUBJECT, "bob")],
        ] {
            let status = Caller::from_metadata(&metadata(&bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn scopes_are_bounded() {
        let many = vec!["s".repeat(100); 100];
        let caller = Caller::new("alice", many.iter().map(String::as_str)).unwrap();
        let mut sent = MetadataMap::new();
        caller.insert_into(&mut sent);
        assert!(sent.get(SCOPES).unwrap().len() <= MAX_SCOPES_LEN);
        assert!(Caller::new("al ice", []).is_none());
        assert!(Caller::new("élise", []).is_none());
    }
}
