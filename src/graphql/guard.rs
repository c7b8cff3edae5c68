//! The caller of a resolver, and the access checks resolvers make.

use async_graphql::Context;

use crate::auth::{
    access::{authorize, Action},
    Caller,
};
use crate::domain::ThreadId;
use crate::error::Error;
use crate::store::MessageStore;

/// Who is calling. HTTP puts it in every request, WebSocket in the
/// connection data at `connection_init`; absent means not authenticated.
pub fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller, Error> {
    ctx.data_opt::<Caller>().ok_or(Error::Unauthenticated)
}

/// Checks that the caller may do `action` on `thread`.
pub async fn check<'a>(ctx: &Context<'a>, thread: &ThreadId, action: Action) -> Result<&'a Caller, Error> {
    let caller = caller(ctx)?;
    authorize(ctx.data::<MessageStore>()?, caller, thread, action).await?;
    Ok(caller)
}

/// Operational data (storage metrics): service principals, or no authentication.
pub fn operator(ctx: &Context<'_>) -> Result<(), Error> {
    match caller(ctx)? {
        Caller::Open => Ok(()),
        Caller::Principal(p) if p.service => Ok(()),
        Caller::Principal(_) => Err(Error::Forbidden),
    }
}
