//! `Mutation`: parse the input at the edge, then one store call.

use async_graphql::{Context, Object};

use std::sync::Arc;

use async_graphql::{Json, ID};

use super::guard::check;
use super::types::{DeleteMode, MessageCreate, MessageNode};
use crate::auth::{
    access::{may_change, Action},
    Caller,
};
use crate::domain::{
    ClientMessageId, Content, DeleteRequest, EditRequest, Message, MessageId, Metadata, NewMessage, ThreadId, UserId,
};
use crate::error::Error;
use crate::rate::RateLimits;
use crate::store::{Access, MessageStore};

/// Root mutations.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Saves a message; acknowledged once a tier holds it durably.
    /// Members only; the first writer of a thread becomes its owner.
    /// `authorId` is the caller's token `sub`.
    async fn save_message(&self, ctx: &Context<'_>, input: MessageCreate) -> Result<MessageNode, Error> {
        let mut new = NewMessage {
            // Fixed before storage is touched, so a fallback after an
            // ambiguous Redis timeout names the same message.
            id: MessageId::generate(),
            thread_id: ThreadId::parse(&input.thread_id)?,
            role: input.role.into(),
            content: Content::parse(input.content)?,
            metadata: input.metadata.map(|j| Metadata::parse(j.0)).transpose()?,
            client_message_id: input.client_message_id.as_deref().map(ClientMessageId::parse).transpose()?,
            author_id: None,
        };
        let caller = super::guard::caller(ctx)?;
        ctx.data::<Arc<RateLimits>>()?.check_save(caller)?;
        check(ctx, &new.thread_id, Action::Write).await?;
        new.author_id = caller.author_id();
        let store = ctx.data::<MessageStore>()?;
        Ok(MessageNode(store.save(new).await?))
    }

    /// Edits a message: its author or a service principal. At least one of
    /// `content` and `metadata`, validated as on create. With
    /// `expectedVersion`, a message at another version answers
    /// `VERSION_CONFLICT` (`extensions.currentVersion`), except a retry of
    /// the edit that made it (same payload), which returns it as it is.
    async fn edit_message(
        &self,
        ctx: &Context<'_>,
        id: ID,
        content: Option<String>,
        metadata: Option<Json<serde_json::Value>>,
        expected_version: Option<i32>,
    ) -> Result<MessageNode, Error> {
        let id = MessageId::parse(&id)?;
        let req = EditRequest::new(
            id,
            content.map(Content::parse).transpose()?,
            metadata.map(|j| Metadata::parse(j.0)).transpose()?,
            expected_version,
        )?;
        let (caller, thread, message) = readable(ctx, id).await?;
        if !may_change(caller, message.author_id.as_deref()) {
            return Err(Error::Forbidden);
        }
        Ok(MessageNode(ctx.data::<MessageStore>()?.change(&thread, &req).await?))
    }

    /// Deletes a message: its author, the thread's owner or a service
    /// principal. `SOFT` leaves a tombstone (content "", metadata null,
    /// `deletedAt` set, a new version; the earlier version stays in
    /// history). Deleting a tombstone returns it.
    async fn delete_message(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default_with = "Some(DeleteMode::Soft)")] mode: Option<DeleteMode>,
    ) -> Result<MessageNode, Error> {
        let id = MessageId::parse(&id)?;
        let DeleteMode::Soft = mode.unwrap_or(DeleteMode::Soft);
        let (caller, thread, message) = readable(ctx, id).await?;
        let store = ctx.data::<MessageStore>()?;
        if !may_change(caller, message.author_id.as_deref()) {
            let owner =
                match (caller.principal(), store.access(&thread, caller.principal().map(|p| p.id.as_str())).await?) {
                    (Some(p), Access::Claimed { owner: Some(owner), .. }) => owner == p.id,
                    _ => false,
                };
            if !owner {
                return Err(Error::Forbidden);
            }
        }
        Ok(MessageNode(store.change(&thread, &DeleteRequest::soft(id)).await?))
    }

    /// Adds a member to a thread: its owner or a service principal only.
    /// True once the user is a member.
    async fn add_thread_member(&self, ctx: &Context<'_>, thread_id: ID, user_id: ID) -> Result<bool, Error> {
        set_member(ctx, &thread_id, &user_id, true).await
    }

    /// Removes a member (never the owner): its owner or a service principal
    /// only. The member's live subscriptions to the thread end.
    async fn remove_thread_member(&self, ctx: &Context<'_>, thread_id: ID, user_id: ID) -> Result<bool, Error> {
        set_member(ctx, &thread_id, &user_id, false).await
    }
}

/// The message a change names, if the caller may read it (else
/// `NOT_FOUND`: the caller learns nothing about it), after the rate limit
/// every write takes.
async fn readable<'a>(ctx: &Context<'a>, id: MessageId) -> Result<(&'a Caller, ThreadId, Message), Error> {
    let caller = super::guard::caller(ctx)?;
    ctx.data::<Arc<RateLimits>>()?.check_save(caller)?;
    let message = ctx.data::<MessageStore>()?.message(id).await?.ok_or(Error::NotFound)?;
    let thread = ThreadId::parse(&message.thread_id)?;
    match check(ctx, &thread, Action::Read).await {
        Err(Error::Forbidden) => Err(Error::NotFound),
        Err(e) => Err(e),
        Ok(_) => Ok((caller, thread, message)),
    }
}

async fn set_member(ctx: &Context<'_>, thread_id: &str, user_id: &str, member: bool) -> Result<bool, Error> {
    let thread = ThreadId::parse(thread_id)?;
    let user = UserId::parse(user_id)?;
    check(ctx, &thread, Action::Manage).await?;
    let store = ctx.data::<MessageStore>()?;
    if store.set_member(&thread, user.as_str(), member).await? {
        Ok(true)
    } else {
        Err(Error::Forbidden) // unclaimed: only a service principal gets here
    }
}
