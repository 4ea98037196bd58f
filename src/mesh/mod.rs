//! The mesh: peers known by NodeId, membership, the elected coordinator and job allocation.

pub mod alloc;
pub mod election;
pub mod id;
