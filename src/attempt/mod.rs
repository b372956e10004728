//! One attempt: the supervisor's state machine ([`supervise`]), the child
//! side of the fork ([`spawn`], the fork/exec boundary), its liveness
//! bookkeeping ([`liveness`]) and its sd_notify socket ([`notify`]).

pub mod liveness;
pub mod notify;
pub mod spawn;
pub mod supervise;
