//! NoxRegistry: who is in the network.
//!
//! * [`view`] — the registered set folded from the registry's events, and the
//!   active set routes are drawn from;
//! * [`follower`] — keeps a view in step with the chain behind a confirmation
//!   depth, survives reorgs and restarts, checks the registry's fingerprint;
//! * [`operator`] — the transactions of an operator: register, status,
//!   unstake, withdraw.

pub mod follower;
pub mod operator;
pub mod view;

pub use follower::{
    FingerprintCheck, FollowError, FollowerConfig, MemoryProgress, PollReport, Progress, ProgressStore,
    RegistryFollower,
};
pub use view::{ActiveNode, RegisteredNode, RegistryView};
