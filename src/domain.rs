//! Domain types: everything the API accepts is parsed into these newtypes at
//! the edge, so the store never sees an unchecked string. No I/O here.

mod change;
mod cursor;
mod input;
mod message;
#[cfg(test)]
mod props;
mod time;

pub use change::{decide_edit, ChangeRequest, DeleteRequest, EditOutcome, EditRequest, MessageVersion, Refusal};
pub use cursor::{Cursor, EventCursor, OrderKey};
pub use input::{ClientMessageId, Content, Metadata, ThreadId, UserId, ValidationError};
pub use message::{Message, MessageId, NewMessage, Role};
pub use time::Timestamp;
