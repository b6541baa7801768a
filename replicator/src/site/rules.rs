//! The ownership rules every write and every received entry is held to:
//! may this site write a tenant now (owner, lease, not moving), is a shard
//! still this site's under an epoch, and the highest epoch it knows.

use super::Site;
use crate::error::ReplicaError;

impl Site {
    /// The shard and epoch this site may write `tenant` under, or why not.
    pub fn check_owner(&self, tenant: &str) -> Result<(u32, u64), ReplicaError> {
        // A site that (last it knew) does not own the shard sends the client
        // to the owner without needing a lease; owning needs a valid one.
        if let Some(err) = self.view.latest().and_then(|s| self.not_owner(&s, tenant)) {
            return Err(err);
        }
        let state = self.view.leased().ok_or_else(|| {
            ReplicaError::NoLease(format!(
                "site {} has not reached the controller leader within {} s, so it cannot prove it still owns the shard",
                self.name,
                crate::view::LEASE.as_secs()
            ))
        })?;
        if let Some(err) = self.not_owner(&state, tenant) {
            return Err(err);
        }
        let (shard, owner) = state.shard_for(tenant).ok_or_else(|| ReplicaError::NoLease("the controller has no shard map yet".into()))?;
        if let Some(to) = &owner.moving_to {
            return Err(ReplicaError::Moving { shard, to: to.clone() });
        }
        Ok((shard, owner.epoch))
    }

    /// The redirect to `tenant`'s owner, when it is not this site.
    fn not_owner(&self, state: &tandem_controller::state::ClusterState, tenant: &str) -> Option<ReplicaError> {
        let (shard, owner) = state.shard_for(tenant)?;
        // Being moved here (a failover or switchover under way): the old owner
        // refuses it too, and may be dead; the client retries here.
        if owner.owner != self.name && owner.moving_to.as_deref() == Some(self.name.as_str()) {
            return Some(ReplicaError::Moving { shard, to: self.name.clone() });
        }
        if owner.owner != self.name {
            return Some(ReplicaError::NotOwner {
                shard,
                owner: owner.owner.clone(),
                owner_addr: self.addr_of(&owner.owner).unwrap_or("unknown").to_string(),
                epoch: owner.epoch,
            });
        }
        None
    }

    /// `shard` is still this site's, under `epoch`, and not being drained.
    pub(crate) fn still_owner(&self, shard: u32, epoch: u64) -> Result<(), ReplicaError> {
        let state = self
            .view
            .leased()
            .ok_or_else(|| ReplicaError::NoLease(format!("site {} lost its controller view during the write; nothing was stored", self.name)))?;
        let s = state.shards.get(shard as usize).ok_or_else(|| ReplicaError::NoLease(format!("no shard {shard} in the map")))?;
        if s.owner != self.name || s.epoch != epoch {
            return Err(ReplicaError::NoLease(format!("shard {shard} moved to {} (epoch {}) during the write; nothing was stored", s.owner, s.epoch)));
        }
        if let Some(to) = &s.moving_to {
            return Err(ReplicaError::Moving { shard, to: to.clone() });
        }
        Ok(())
    }

    /// The highest epoch this site knows for `shard`: from entries it stored
    /// and from the controller's shard map.
    pub(crate) fn known_epoch(&self, shard: u32) -> Result<u64, ReplicaError> {
        Ok(self.meta.epoch(shard)?.max(self.view.latest().and_then(|s| s.shards.get(shard as usize).map(|s| s.epoch)).unwrap_or(0)))
    }
}
