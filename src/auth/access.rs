//! The access policy (what `store/access.rs` stores, decided here).
//!
//! | caller | read / watch | write | add / remove members |
//! | --- | --- | --- | --- |
//! | `AUTH_MODE=none` | yes | yes | yes |
//! | service principal | yes | yes (claims an unclaimed thread for no one) | yes |
//! | user, unclaimed thread | `FORBIDDEN` | yes: becomes the owner | `FORBIDDEN` |
//! | user, member | yes | yes | only the owner |
//! | user, not a member | `FORBIDDEN` | `FORBIDDEN` | `FORBIDDEN` |
//!
//! A non-member learns nothing: `FORBIDDEN` whether the thread exists or not.

use super::Caller;
use crate::domain::ThreadId;
use crate::error::Error;
use crate::store::{Access, MessageStore};

/// What a caller wants to do on a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read messages or subscribe.
    Read,
    /// Save a message.
    Write,
    /// Add or remove members.
    Manage,
}

/// Whether `caller` may change a message written by `author`: its author,
/// a service principal, or anyone without authentication (SPEC §7).
pub fn may_change(caller: &Caller, author: Option<&str>) -> bool {
    match caller.principal() {
        None => true,
        Some(p) => p.service || author == Some(p.id.as_str()),
    }
}

/// Allows `action` on `thread` for `caller`, or says why not.
pub async fn authorize(store: &MessageStore, caller: &Caller, thread: &ThreadId, action: Action) -> Result<(), Error> {
    let Some(p) = caller.principal() else {
        return Ok(());
    };
    if p.service {
        if action == Action::Write {
            store.claim(thread, None).await?;
        }
        return Ok(());
    }
    let mut access = store.access(thread, Some(&p.id)).await?;
    if access == Access::Unclaimed && action == Action::Write {
        store.claim(thread, Some(&p.id)).await?;
        access = store.access(thread, Some(&p.id)).await?;
    }
    let allowed = match (&access, action) {
        (Access::Unclaimed, _) => false,
        (Access::Claimed { member, .. }, Action::Read | Action::Write) => *member,
        (Access::Claimed { owner, .. }, Action::Manage) => owner.as_deref() == Some(p.id.as_str()),
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}
