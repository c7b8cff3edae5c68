//! Changes of stored messages (SPEC §7: edits, soft deletes), in the write
//! shape of every write (`write.rs`): a Redis attempt (read the body,
//! decide, compare-and-set in one script), else one PostgreSQL transaction
//! under the failover gate. What a change does is the request's
//! [`ChangeRequest::decide`]; this file is the same for every kind.

use super::failover::gate::Missed;
use super::postgres::{EditResult, PgFault};
use super::redis::{changes::ChangeReply, RedisTier};
use super::write::Attempt;
use super::{MessageStore, StoreError};
use crate::domain::{ChangeRequest, EditOutcome, Message, MessageId, Refusal, ThreadId};
use crate::store::wire;

/// How often an edit decides again when the body changed under it.
const CAS_TRIES: usize = 5;

impl MessageStore {
    /// Changes a message of `thread` (the caller has checked who may).
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread, message_id = %req.id()))]
    pub async fn change(&self, thread: &ThreadId, req: &impl ChangeRequest) -> Result<Message, StoreError> {
        self.write(
            || async || self.change_in_redis(thread, req).await,
            async |maybe| self.change_in_postgres(thread, req, maybe).await,
        )
        .await
    }

    /// The message as a change must be decided on: Redis's body, byte for
    /// byte, else PostgreSQL's row (Redis holds no body once a persisted
    /// one expired; an unpersisted one never expires).
    async fn change_base(&self, thread: &ThreadId, id: MessageId) -> Result<(Message, Vec<u8>), Attempt<Message>> {
        let raw = match self.via_redis_patiently(|| async |r: &RedisTier| r.raw_body(thread, &id).await).await {
            Ok(raw) => raw,
            Err(Missed::Skipped) => return Err(Attempt::Skipped),
            // A read: nothing was applied.
            Err(Missed::Failed(_)) => return Err(Attempt::FailOver { maybe_applied: false }),
        };
        if let Some(raw) = raw {
            return match wire::decode_body(&raw) {
                Some(m) => Ok((m, raw)),
                None => Err(Attempt::Done(Err(StoreError::Internal(format!("undecodable body of {id}"))))),
            };
        }
        match self.pg.by_ids(&[id]).await {
            Ok(rows) => match rows.into_iter().find(|m| m.thread_id == thread.as_str()) {
                Some(m) => Ok((m, Vec::new())),
                None => Err(Attempt::Done(Err(StoreError::Refused(Refusal::NotFound)))),
            },
            Err(_) => Err(Attempt::Done(Err(StoreError::UNAVAILABLE))),
        }
    }

    async fn change_in_redis(&self, thread: &ThreadId, req: &impl ChangeRequest) -> Attempt<Message> {
        let mut current_version = 0;
        for _ in 0..CAS_TRIES {
            let (current, base) = match self.change_base(thread, req.id()).await {
                Ok(found) => found,
                Err(attempt) => return attempt,
            };
            current_version = current.version;
            let (next, replaced) = match req.decide(&current) {
                Ok(EditOutcome::Apply(next, replaced)) => (next, replaced),
                Ok(EditOutcome::AlreadyApplied(m)) => return Attempt::Done(Ok(m)),
                Err(refusal) => return Attempt::Done(Err(StoreError::Refused(refusal))),
            };
            let c = &self.config;
            let reply = self.via_redis_patiently(|| async |r: &RedisTier| r.change(&next, &replaced, &base, c).await);
            match reply.await {
                Ok(ChangeReply::Applied(seq)) => {
                    self.metrics.change();
                    return Attempt::Done(Ok(Message { change_seq: seq, ..next }));
                }
                // Changed under us (another edit, or the persister flagging
                // the body persisted): decide again on what is there now.
                Ok(ChangeReply::Changed) => continue,
                Ok(ChangeReply::BacklogFull) => {
                    self.backpressure.refused();
                    return Attempt::Done(Err(StoreError::UNAVAILABLE));
                }
                Err(Missed::Skipped) => return Attempt::Skipped,
                Err(missed) => {
                    tracing::warn!(fault = %missed, "redis change failed; writing to postgres");
                    return Attempt::FailOver { maybe_applied: missed.maybe_applied() };
                }
            }
        }
        // Other changes kept landing first: the client decides again.
        Attempt::Done(Err(StoreError::Refused(Refusal::VersionConflict { current: current_version })))
    }

    /// The failover transaction of a change; the caller holds the failover
    /// gate. While Redis is out, PostgreSQL decides on its own copy: a
    /// message whose only copy is unpersisted in Redis is not found then
    /// (as reads don't see it either; README, guarantees).
    async fn change_in_postgres(
        &self,
        thread: &ThreadId,
        req: &impl ChangeRequest,
        maybe_in_redis: bool,
    ) -> Result<Message, StoreError> {
        match self.pg.change(thread.as_str(), req).await {
            Ok(EditResult::Edited(m)) => {
                self.metrics.failover_write();
                self.metrics.change();
                Ok(m)
            }
            Ok(EditResult::Unchanged(result)) => result.map_err(StoreError::Refused),
            Err(fault) => {
                tracing::error!(%fault, "failover change failed: neither tier can take the write");
                let maybe_stored = maybe_in_redis || matches!(fault, PgFault::CommitUnknown(_));
                Err(StoreError::Unavailable { maybe_stored })
            }
        }
    }
}
