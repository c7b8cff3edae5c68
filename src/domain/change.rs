//! Changes to a stored message (SPEC §7): what an edit or a delete asks
//! for, and the pure decision whether and how it applies to the message as
//! it is now ([`ChangeRequest::decide`]). Both tiers decide on the state
//! they hold with these, so the rules live in one place.

use super::{Content, Message, MessageId, Metadata, Timestamp, ValidationError};

/// A validated `editMessage`.
#[derive(Debug, Clone)]
pub struct EditRequest {
    /// The message.
    pub id: MessageId,
    /// New text, if it changes.
    pub content: Option<Content>,
    /// New metadata, if it changes.
    pub metadata: Option<Metadata>,
    /// The version the client edited; `None`: whatever is current.
    pub expected_version: Option<i32>,
    /// When the edit was made (the service's clock: not an ordering key).
    pub at: Timestamp,
}

impl EditRequest {
    /// At least one of content and metadata, each validated as on create.
    pub fn new(
        id: MessageId,
        content: Option<Content>,
        metadata: Option<Metadata>,
        expected_version: Option<i32>,
    ) -> Result<Self, ValidationError> {
        if content.is_none() && metadata.is_none() {
            return Err(ValidationError { field: "content", reason: "an edit needs content or metadata".into() });
        }
        if expected_version.is_some_and(|v| v < 1) {
            return Err(ValidationError { field: "expectedVersion", reason: "versions start at 1".into() });
        }
        Ok(Self { id, content, metadata, expected_version, at: Timestamp::now() })
    }

    fn same_payload(&self, m: &Message) -> bool {
        self.content.as_ref().is_none_or(|c| c.as_str() == m.content)
            && self.metadata.as_ref().is_none_or(|d| Some(d.as_value()) == m.metadata.as_ref())
    }
}

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such message (or not readable by the caller).
    NotFound,
    /// The message moved on: it is at `current`.
    VersionConflict {
        /// The message's version now.
        current: i32,
    },
    /// The message is a tombstone.
    Deleted,
}

/// An earlier version of a message, as history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageVersion {
    /// Its number.
    pub version: i32,
    /// Its text.
    pub content: String,
    /// Its metadata.
    pub metadata: Option<serde_json::Value>,
    /// When it was written (createdAt for version 1).
    pub written_at: Timestamp,
}

impl MessageVersion {
    /// The version `m` is at now.
    pub fn of(m: &Message) -> Self {
        MessageVersion {
            version: m.version,
            content: m.content.clone(),
            metadata: m.metadata.clone(),
            written_at: m.edited_at.unwrap_or(m.created_at),
        }
    }
}

/// What an edit does to the message as it is now.
#[derive(Debug, Clone, PartialEq)]
pub enum EditOutcome {
    /// Applies: the new state (its change sequence is the tier's to
    /// assign) and the version it replaces.
    Apply(Message, MessageVersion),
    /// Already applied (a retry: the expected version is one behind and
    /// the payload is what is there): the message as it is.
    AlreadyApplied(Message),
}

/// A change of one stored message, decided on its current state.
pub trait ChangeRequest: Sync {
    /// The message.
    fn id(&self) -> MessageId;
    /// What the change does to `current`.
    fn decide(&self, current: &Message) -> Result<EditOutcome, Refusal>;
}

impl ChangeRequest for EditRequest {
    fn id(&self) -> MessageId {
        self.id
    }

    fn decide(&self, current: &Message) -> Result<EditOutcome, Refusal> {
        decide_edit(current, self)
    }
}

/// A validated `deleteMessage(mode: SOFT)`.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// The message.
    pub id: MessageId,
    /// When it was deleted (the service's clock).
    pub at: Timestamp,
}

impl DeleteRequest {
    /// A soft delete of `id`, now.
    pub fn soft(id: MessageId) -> Self {
        Self { id, at: Timestamp::now() }
    }
}

impl ChangeRequest for DeleteRequest {
    fn id(&self) -> MessageId {
        self.id
    }

    /// A tombstone keeps id, thread, author, createdAt (its place); content
    /// becomes empty and metadata none, as a new version. Deleting a
    /// tombstone returns it.
    fn decide(&self, current: &Message) -> Result<EditOutcome, Refusal> {
        if current.deleted_at.is_some() {
            return Ok(EditOutcome::AlreadyApplied(current.clone()));
        }
        let replaced = MessageVersion::of(current);
        let mut next = current.clone();
        next.content = String::new();
        next.metadata = None;
        next.version = current.version + 1;
        next.deleted_at = Some(self.at.max(replaced.written_at));
        next.persisted = false;
        Ok(EditOutcome::Apply(next, replaced))
    }
}

/// Decides `req` against `current`.
pub fn decide_edit(current: &Message, req: &EditRequest) -> Result<EditOutcome, Refusal> {
    if current.deleted_at.is_some() {
        return Err(Refusal::Deleted);
    }
    if let Some(expected) = req.expected_version {
        if expected != current.version {
            if expected + 1 == current.version && req.same_payload(current) {
                return Ok(EditOutcome::AlreadyApplied(current.clone()));
            }
            return Err(Refusal::VersionConflict { current: current.version });
        }
    }
    let mut next = current.clone();
    if let Some(c) = &req.content {
        next.content = c.as_str().to_owned();
    }
    if let Some(m) = &req.metadata {
        next.metadata = Some(m.as_value().clone());
    }
    next.version = current.version + 1;
    // Never before the version it replaces, whatever the clocks say.
    next.edited_at = Some(req.at.max(MessageVersion::of(current).written_at));
    next.persisted = false;
    Ok(EditOutcome::Apply(next, MessageVersion::of(current)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewMessage, Role, ThreadId};

    fn stored() -> Message {
        NewMessage {
            id: MessageId::generate(),
            thread_id: ThreadId::parse("t").unwrap(),
            role: Role::User,
            content: Content::parse("one".into()).unwrap(),
            metadata: None,
            client_message_id: None,
            author_id: Some("u".into()),
        }
        .to_message(Timestamp::from_micros(10), 10)
    }

    fn edit(content: &str, expected: Option<i32>) -> EditRequest {
        EditRequest::new(MessageId::generate(), Some(Content::parse(content.into()).unwrap()), None, expected).unwrap()
    }

    #[test]
    fn an_edit_bumps_the_version_and_keeps_the_old_one() {
        let m = stored();
        let Ok(EditOutcome::Apply(next, old)) = decide_edit(&m, &edit("two", Some(1))) else { panic!() };
        assert_eq!((next.version, next.content.as_str(), old.version, old.content.as_str()), (2, "two", 1, "one"));
        assert!(next.edited_at.is_some_and(|e| e >= m.created_at));
        assert_eq!((next.created_at, next.id, &next.author_id), (m.created_at, m.id, &m.author_id));
    }

    #[test]
    fn conflicts_and_retries() {
        let m = stored();
        let Ok(EditOutcome::Apply(v2, _)) = decide_edit(&m, &edit("two", None)) else { panic!() };
        assert_eq!(decide_edit(&v2, &edit("three", Some(1))), Err(Refusal::VersionConflict { current: 2 }));
        assert_eq!(decide_edit(&v2, &edit("two", Some(1))), Ok(EditOutcome::AlreadyApplied(v2.clone())));
        assert_eq!(decide_edit(&v2, &edit("two", Some(5))), Err(Refusal::VersionConflict { current: 2 }));
    }

    #[test]
    fn a_delete_leaves_a_tombstone_once_and_tombstones_take_no_edits() {
        let m = stored();
        let del = DeleteRequest::soft(m.id);
        let Ok(EditOutcome::Apply(tomb, old)) = del.decide(&m) else { panic!() };
        assert_eq!((tomb.content.as_str(), &tomb.metadata, tomb.version), ("", &None, 2));
        assert_eq!((old.version, old.content.as_str()), (1, "one"));
        assert!(tomb.deleted_at.is_some() && tomb.created_at == m.created_at && tomb.author_id == m.author_id);
        assert_eq!(del.decide(&tomb), Ok(EditOutcome::AlreadyApplied(tomb.clone())));
        assert_eq!(decide_edit(&tomb, &edit("back", None)), Err(Refusal::Deleted));
        assert_eq!(decide_edit(&tomb, &edit("back", Some(2))), Err(Refusal::Deleted));
    }

    #[test]
    fn an_edit_needs_something_to_change() {
        assert!(EditRequest::new(MessageId::generate(), None, None, None).is_err());
        assert!(EditRequest::new(MessageId::generate(), None, Metadata::parse(serde_json::json!({})).ok(), Some(0))
            .is_err());
    }
}
