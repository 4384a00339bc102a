//! The names of Sightline's broker topology, the same for every backend.
//!
//! ```text
//! {ns}.events   topic exchange
//!   partition.{p}  -> {ns}.{group}.p{p}   one quorum queue per consumer group and partition
//!   invalid        -> {ns}.invalid        events ingest refused, with their reason
//! {ns}.dlx      topic exchange for dead letters -> {ns}.dead-letter
//! ```

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// A partition of the valid event stream.
    Partition(u32),
    /// The invalid-event stream.
    Invalid,
}

/// The names of one deployment's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prefix of every name.
    pub namespace: String,
    /// Partitions per consumer group.
    pub partitions: u32,
    /// Consumer groups.
    pub consumer_groups: Vec<String>,
}

impl Topology {
    /// The exchange events are published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The exchange dead letters go to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.namespace)
    }

    /// The queue dead letters collect in.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.namespace)
    }

    /// The queue of invalid events.
    pub fn invalid_queue(&self) -> String {
        format!("{}.invalid", self.namespace)
    }

    /// The queue of `group` for `partition`.
    pub fn partition_queue(&self, group: &str, partition: u32) -> String {
        format!("{}.{group}.p{partition}", self.namespace)
    }

    /// Every partition queue of every group.
    pub fn partition_queues(&self) -> impl Iterator<Item = (String, u32, String)> + '_ {
        self.consumer_groups.iter().flat_map(move |group| {
            (0..self.partitions).map(move |p| (group.clone(), p, self.partition_queue(group, p)))
        })
    }

    /// The routing key of a route.
    pub fn routing_key(route: Route) -> String {
        match route {
            Route::Partition(p) => format!("partition.{p}"),
            Route::Invalid => "invalid".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced_and_cover_every_group_and_partition() {
        let t = Topology {
            namespace: "t1".into(),
            partitions: 3,
            consumer_groups: vec!["rollup".into(), "archive".into()],
        };
        let queues: Vec<_> = t.partition_queues().map(|(_, _, q)| q).collect();
        assert_eq!(queues.len(), 6);
        assert!(queues.contains(&"t1.rollup.p0".to_string()));
        assert!(queues.contains(&"t1.archive.p2".to_string()));
        assert_eq!(Topology::routing_key(Route::Partition(2)), "partition.2");
        assert_eq!(Topology::routing_key(Route::Invalid), "invalid");
    }
}

/// The partition of a visitor: `hash(tenant, visitor) mod partitions`, so a visitor's events
/// stay in one ordered queue. The hash (BLAKE3, first 8 bytes little-endian) is part of the
/// contract: every producer must route the same way.
pub fn partition_for(tenant_id: i64, visitor_id: &str, partitions: u32) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&tenant_id.to_le_bytes());
    hasher.update(visitor_id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod partition_tests {
    use super::partition_for;

    #[test]
    fn stable_and_spread() {
        assert_eq!(partition_for(1, "v", 8), partition_for(1, "v", 8));
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            seen[partition_for(7, &format!("visitor-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
