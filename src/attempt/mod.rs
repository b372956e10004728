//! One attempt: its states ([`state`], pure) and the supervisor that drives
//! them ([`supervise`]), the child
//! side of the fork ([`spawn`], the fork/exec boundary), the guardian that
//! stays with the caller ([`guardian`]), its liveness bookkeeping
//! ([`liveness`]) and its sd_notify socket ([`notify`]).

pub(crate) mod guardian;
pub(crate) mod liveness;
pub(crate) mod notify;
#[allow(unsafe_code)]
pub(crate) mod spawn;
pub(crate) mod spec;
pub(crate) mod state;
pub(crate) mod supervise;
