//! `Mutation`: parse the input at the edge, then one store call.

use async_graphql::{Context, Object};

use super::types::{MessageCreate, MessageNode};
use crate::domain::{ClientMessageId, Content, MessageId, Metadata, NewMessage, ThreadId};
use crate::error::Error;
use crate::store::MessageStore;

/// Root mutations.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Saves a message; acknowledged once a tier holds it durably.
    async fn save_message(&self, ctx: &Context<'_>, input: MessageCreate) -> Result<MessageNode, Error> {
        let new = NewMessage {
            // Fixed before storage is touched, so a fallback after an
            // ambiguous Redis timeout names the same message.
            id: MessageId::generate(),
            thread_id: ThreadId::parse(&input.thread_id)?,
            role: input.role.into(),
            content: Content::parse(input.content)?,
            metadata: input.metadata.map(|j| Metadata::parse(j.0)).transpose()?,
            client_message_id: input.client_message_id.as_deref().map(ClientMessageId::parse).transpose()?,
        };
        let store = ctx.data::<MessageStore>()?;
        Ok(MessageNode(store.save(new).await?))
    }
}
