//! Route choice: which nodes a packet crosses and how long each holds it.
//!
//! Every party that builds packets — a client, a node's cover traffic, the
//! test harnesses — chooses routes here, from a [`RouteSet`]: the nodes of
//! each layer whose mix key for the packet's epoch is known, with that key.
//! The caller builds the set from its own view (a node from its topology, a
//! client from the registry and its entry's descriptors); the choice itself is
//! pure and takes its randomness from the caller.
//!
//! * [`RouteSet::stratified`]: one node of each layer, entry → mix → exit
//!   (Loopix), optionally with a given exit;
//! * [`RouteSet::free`]: 3–6 hops (Fog): an entry first, an exit last, any
//!   nodes between, never the same node twice in a row.
//!
//! A node's cover takes the client's shapes: its loops are stratified echo
//! requests to an exit offering Echo ([`RouteSet::exits_offering`]) with a
//! SURB over a mix back to the same entry, its drops stratified routes.
//!
//! Delays are the sender's (Loopix): [`exponential_delay_us`] samples one hop's
//! delay with a given mean; nodes cap what they honour.

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::crypto::x25519::MixPublicKey;
use crate::payload::RequestKind;
use crate::sphinx::{Hop, MAX_HOPS, NodeId};
use crate::topology::{ENTRY_LAYER, EXIT_LAYER, MAX_LAYER};

/// Fewest hops of a free route.
pub const MIN_FREE_HOPS: usize = 3;
/// Most hops of a free route (the header's capacity).
pub const MAX_FREE_HOPS: usize = MAX_HOPS;

/// Why no route could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A layer has no eligible node with a key for the epoch.
    #[error("no node with a key for this epoch in layer {0}")]
    EmptyLayer(u8),
    /// The requested exit is not an exit with a key for the epoch.
    #[error("the requested exit has no key for this epoch")]
    UnknownExit,
    /// The requested entry is not an entry with a key for the epoch.
    #[error("the requested entry has no key for this epoch")]
    UnknownEntry,
    /// A free route's length outside [`MIN_FREE_HOPS`]..=[`MAX_FREE_HOPS`].
    #[error("a free route has {MIN_FREE_HOPS} to {MAX_FREE_HOPS} hops, not {0}")]
    BadLength(usize),
    /// A layer number above [`MAX_LAYER`].
    #[error("layer {0} does not exist")]
    NoSuchLayer(u8),
    /// A node asked for by id has no key for the epoch.
    #[error("hop {0} of the route has no key for this epoch")]
    UnknownHop(usize),
}

/// The nodes a route may be drawn from, by layer, each with its mix key for
/// one epoch. Kept sorted by node id, so that the same view gives the same
/// set whatever order it was read in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet {
    layers: [Vec<(NodeId, MixPublicKey)>; 3],
    /// Exit → the request kinds its descriptor offers (`RequestKind::bit`s).
    services: std::collections::BTreeMap<NodeId, u16>,
}

impl RouteSet {
    /// An empty set.
    pub fn new() -> Self {
        RouteSet::default()
    }

    /// Adds (or replaces) a node of `layer`.
    pub fn insert(&mut self, layer: u8, id: NodeId, key: MixPublicKey) -> Result<(), RouteError> {
        let members = self.layers.get_mut(usize::from(layer)).ok_or(RouteError::NoSuchLayer(layer))?;
        match members.binary_search_by_key(&id.0, |(n, _)| n.0) {
            Ok(i) => members[i].1 = key,
            Err(i) => members.insert(i, (id, key)),
        }
        Ok(())
    }

    /// Records the services an exit's descriptor offers.
    pub fn set_services(&mut self, id: NodeId, services: u16) {
        self.services.insert(id, services);
    }

    /// The exits (with a key for the epoch) that offer `kind`.
    pub fn exits_offering(&self, kind: RequestKind) -> Vec<NodeId> {
        self.layer(EXIT_LAYER)
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| self.services.get(id).is_some_and(|m| m & kind.bit() != 0))
            .collect()
    }

    /// The nodes of `layer` (empty for a layer that does not exist).
    pub fn layer(&self, layer: u8) -> &[(NodeId, MixPublicKey)] {
        self.layers.get(usize::from(layer)).map_or(&[], Vec::as_slice)
    }

    /// The key of `id`, whatever its layer.
    pub fn key_of(&self, id: &NodeId) -> Option<MixPublicKey> {
        self.layers.iter().flatten().find(|(n, _)| n == id).map(|(_, k)| *k)
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.key_of(id).is_some()
    }

    /// The route through exactly the nodes `ids`, each holding the packet
    /// `delay_us` (test harnesses and diagnostics name their hops).
    pub fn explicit(&self, ids: &[NodeId], delay_us: u32) -> Result<Vec<Hop>, RouteError> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| self.key_of(id).map(|key| Hop { id: *id, key, delay_us }).ok_or(RouteError::UnknownHop(i)))
            .collect()
    }

    /// One node of `layer` at random, other than those in `exclude`, with no delay set.
    pub fn pick(&self, layer: u8, exclude: &[NodeId], rng: &mut impl Rng) -> Result<Hop, RouteError> {
        if layer > MAX_LAYER {
            return Err(RouteError::NoSuchLayer(layer));
        }
        let eligible: Vec<&(NodeId, MixPublicKey)> =
            self.layer(layer).iter().filter(|(id, _)| !exclude.contains(id)).collect();
        let (id, key) = eligible.choose(rng).copied().ok_or(RouteError::EmptyLayer(layer))?;
        Ok(Hop { id: *id, key: *key, delay_us: 0 })
    }

    /// Entry → mix → exit, one node of each layer at random; `exit` fixes the
    /// last hop (a client picks the exit first when its request names it).
    /// Nodes in `exclude` are not chosen (a node leaves itself out of its
    /// cover). Delays are left at 0.
    pub fn stratified(
        &self,
        exit: Option<NodeId>,
        exclude: &[NodeId],
        rng: &mut impl Rng,
    ) -> Result<Vec<Hop>, RouteError> {
        self.stratified_between(None, exit, exclude, rng)
    }

    /// [`RouteSet::stratified`] from `entry` when given (a client's own
    /// entry node) to `exit` when given.
    pub fn stratified_between(
        &self,
        entry: Option<NodeId>,
        exit: Option<NodeId>,
        exclude: &[NodeId],
        rng: &mut impl Rng,
    ) -> Result<Vec<Hop>, RouteError> {
        let entry = self.end(ENTRY_LAYER, entry, exclude, rng)?;
        let mix = self.pick(1, exclude, rng)?;
        let exit = self.end(EXIT_LAYER, exit, exclude, rng)?;
        Ok(vec![entry, mix, exit])
    }

    /// The node `fixed` of `layer` if given (an error if it has no key there),
    /// otherwise one drawn at random outside `exclude`.
    fn end(&self, layer: u8, fixed: Option<NodeId>, exclude: &[NodeId], rng: &mut impl Rng) -> Result<Hop, RouteError> {
        match fixed {
            Some(id) => {
                let unknown = if layer == EXIT_LAYER { RouteError::UnknownExit } else { RouteError::UnknownEntry };
                let key = self.layer(layer).iter().find(|(n, _)| *n == id).ok_or(unknown)?.1;
                Ok(Hop { id, key, delay_us: 0 })
            }
            None => self.pick(layer, exclude, rng),
        }
    }

    /// A free route of `hops` hops: an entry first (the only layer that
    /// admits clients), an exit last, nodes of any layer between, never the
    /// same node twice in a row.
    pub fn free(&self, hops: usize, rng: &mut impl Rng) -> Result<Vec<Hop>, RouteError> {
        self.free_between(hops, None, None, rng)
    }

    /// [`RouteSet::free`] from `entry` and to `exit` when given.
    pub fn free_between(
        &self,
        hops: usize,
        entry: Option<NodeId>,
        exit: Option<NodeId>,
        rng: &mut impl Rng,
    ) -> Result<Vec<Hop>, RouteError> {
        if !(MIN_FREE_HOPS..=MAX_FREE_HOPS).contains(&hops) {
            return Err(RouteError::BadLength(hops));
        }
        let mut route = vec![self.end(ENTRY_LAYER, entry, &[], rng)?];
        let anyone: Vec<&(NodeId, MixPublicKey)> = self.layers.iter().flatten().collect();
        for i in 1..hops - 1 {
            // Never the node before; the hop before a fixed exit is not the exit either.
            let mut avoid: Vec<NodeId> = route.last().map(|h| h.id).into_iter().collect();
            if i == hops - 2 {
                avoid.extend(exit);
            }
            let eligible: Vec<&(NodeId, MixPublicKey)> =
                anyone.iter().copied().filter(|(id, _)| !avoid.contains(id)).collect();
            let (id, key) = eligible.choose(rng).copied().ok_or(RouteError::EmptyLayer(1))?;
            route.push(Hop { id: *id, key: *key, delay_us: 0 });
        }
        let prev: Vec<NodeId> = route.last().map(|h| h.id).into_iter().collect();
        route.push(self.end(EXIT_LAYER, exit, &prev, rng)?);
        Ok(route)
    }
}

/// One hop's delay in microseconds, exponential with mean `mean` (saturating
/// at `u32::MAX`).
pub fn exponential_delay_us(rng: &mut impl Rng, mean: Duration) -> u32 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let us = -u.ln() * mean.as_secs_f64() * 1e6;
    us.min(f64::from(u32::MAX)) as u32
}

/// Sets every hop's delay to a fresh [`exponential_delay_us`] sample.
pub fn sample_delays(route: &mut [Hop], mean: Duration, rng: &mut impl Rng) {
    for hop in route {
        hop.delay_us = exponential_delay_us(rng, mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn set(per_layer: usize) -> RouteSet {
        let mut s = RouteSet::new();
        for layer in 0..3u8 {
            for i in 0..per_layer {
                let b = layer * 16 + i as u8 + 1;
                s.insert(layer, NodeId([b; 32]), MixPublicKey([b; 32])).unwrap();
            }
        }
        s
    }

    fn layer_of(s: &RouteSet, id: &NodeId) -> u8 {
        (0..3u8).find(|l| s.layer(*l).iter().any(|(n, _)| n == id)).unwrap()
    }

    #[test]
    fn stratified_routes_cross_each_layer_once_in_order() {
        let s = set(3);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..100 {
            let r = s.stratified(None, &[], &mut rng).unwrap();
            let layers: Vec<u8> = r.iter().map(|h| layer_of(&s, &h.id)).collect();
            assert_eq!(layers, vec![0, 1, 2]);
            assert!(r.iter().all(|h| s.key_of(&h.id) == Some(h.key)));
        }
        let exit = s.layer(2)[1].0;
        assert_eq!(s.stratified(Some(exit), &[], &mut rng).unwrap()[2].id, exit);
        let entry = s.layer(0)[0].0;
        assert_eq!(s.stratified(Some(entry), &[], &mut rng), Err(RouteError::UnknownExit));
        let named = s.explicit(&[entry, exit], 7).unwrap();
        assert_eq!((named[0].id, named[1].id, named[1].delay_us), (entry, exit, 7));
        assert_eq!(s.explicit(&[entry, NodeId([0xff; 32])], 7), Err(RouteError::UnknownHop(1)));
    }

    #[test]
    fn exits_are_chosen_among_those_offering_the_service() {
        let mut s = set(3);
        let exits: Vec<NodeId> = s.layer(2).iter().map(|(n, _)| *n).collect();
        assert!(s.exits_offering(RequestKind::RpcCall).is_empty(), "no descriptor, no service");
        s.set_services(exits[0], RequestKind::mask_of(&[RequestKind::Echo]));
        s.set_services(exits[2], RequestKind::mask_of(&[RequestKind::Echo, RequestKind::RpcCall]));
        assert_eq!(s.exits_offering(RequestKind::RpcCall), vec![exits[2]]);
        assert_eq!(s.exits_offering(RequestKind::Echo), vec![exits[0], exits[2]]);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for hops in MIN_FREE_HOPS..=MAX_FREE_HOPS {
            for _ in 0..50 {
                let r = s.free_between(hops, None, Some(exits[2]), &mut rng).unwrap();
                assert_eq!((r.len(), r[hops - 1].id), (hops, exits[2]));
                assert!(r.windows(2).all(|w| w[0].id != w[1].id));
            }
        }
        assert_eq!(s.free_between(3, None, Some(s.layer(0)[0].0), &mut rng), Err(RouteError::UnknownExit));
        // A client fixes its own entry too, in both shapes.
        let entry = s.layer(0)[1].0;
        assert_eq!(s.stratified_between(Some(entry), Some(exits[2]), &[], &mut rng).unwrap()[0].id, entry);
        assert_eq!(s.free_between(4, Some(entry), Some(exits[2]), &mut rng).unwrap()[0].id, entry);
        assert_eq!(s.free_between(4, Some(exits[2]), None, &mut rng), Err(RouteError::UnknownEntry));
    }

    #[test]
    fn an_empty_or_excluded_layer_is_an_error() {
        let mut s = set(1);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mix = s.layer(1)[0].0;
        assert_eq!(s.stratified(None, &[mix], &mut rng), Err(RouteError::EmptyLayer(1)));
        s.layers[2].clear();
        assert_eq!(s.stratified(None, &[], &mut rng), Err(RouteError::EmptyLayer(2)));
        assert_eq!(s.insert(3, mix, MixPublicKey([0; 32])), Err(RouteError::NoSuchLayer(3)));
    }

    #[test]
    fn free_routes_start_at_an_entry_end_at_an_exit_and_never_repeat_a_hop() {
        let s = set(2);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        for hops in MIN_FREE_HOPS..=MAX_FREE_HOPS {
            for _ in 0..50 {
                let r = s.free(hops, &mut rng).unwrap();
                assert_eq!(r.len(), hops);
                assert_eq!(layer_of(&s, &r[0].id), 0);
                assert_eq!(layer_of(&s, &r[hops - 1].id), 2);
                assert!(r.windows(2).all(|w| w[0].id != w[1].id));
            }
        }
        assert_eq!(s.free(2, &mut rng), Err(RouteError::BadLength(2)));
        assert_eq!(s.free(7, &mut rng), Err(RouteError::BadLength(7)));
    }

    #[test]
    fn exponential_delays_have_the_right_mean() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let n = 20_000;
        let mean: f64 =
            (0..n).map(|_| f64::from(exponential_delay_us(&mut rng, Duration::from_millis(10)))).sum::<f64>()
                / n as f64;
        assert!((mean - 10_000.0).abs() < 400.0, "{mean}");
        let mut route = set(1).stratified(None, &[], &mut rng).unwrap();
        sample_delays(&mut route, Duration::from_millis(1), &mut rng);
        assert!(route.iter().any(|h| h.delay_us > 0));
    }
}
