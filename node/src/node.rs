//! Assembling a running node from its configuration.
//!
//! [`start`] opens the database, loads the epoch keys and replay caches,
//! starts the transport, the four pipeline stages, the exit stage, cover
//! traffic, the control plane and the HTTP listeners, and returns a
//! [`RunningNode`] whose [`RunningNode::shutdown`] stops all of it and releases
//! the database (so a test can start the same node again on the same data).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{AsyncReadExt, StreamExt};
use libp2p::{Multiaddr, PeerId, Stream};
use nox_protocol::NodeId;
use nox_protocol::descriptor::EpochClock;
use nox_protocol::pow::SUBMISSION_LEN;
use nox_protocol::sphinx::PACKET_LEN;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;

use crate::admission::{Admission, StaticAdmission};
use crate::chain::{ChainError, ChainWatcher, WatcherConfig};
use crate::config::{NodeConfig, Role};
use crate::control::{self, ControlContext};
use crate::cover::{self, CoverConfig, CoverContext, CoverState};
use crate::delivery::{DeliveryStage, Fragments};
use crate::epoch::{EpochKeyRing, unix_now};
use crate::exit::{
    EthRequestConfig, EthRequestService, EthSetupError, ExitContext, ExitStage, MailExit, ServiceRouter,
};
use crate::http::{self, ApiState};
use crate::keys::NodeKeys;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::pipeline::egress::{EgressConfig, EgressContext, EgressStage};
use crate::pipeline::ingest::{IngestError, IngestStage};
use crate::pipeline::mix::{MixConfig, MixStage, RELEASE_BATCH};
use crate::pipeline::worker::{WorkerConfig, WorkerContext, WorkerStage};
use crate::prices::PriceFeed;
use crate::replay::ReplayCache;
use crate::replies::ReplyMailbox;
use crate::store;
use crate::topology::{Topology, TopologyChange};
use nox_net::p2p::{self, Command, P2pConfig, P2pHandle, PACKET_PROTOCOL, PeerKind, SUBMIT_PROTOCOL};
use nox_net::packet_link::{
    BufferPool, LinkError, LinkListener, LinkReader, ListenerConfig, ListenerMetrics, PACKET_LINK_PROTOCOL, serve_offer,
};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Epoch keys could not be loaded.
    #[error(transparent)]
    Epoch(#[from] crate::epoch::EpochError),
    /// Replay caches could not be loaded.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    /// The transport could not start.
    #[error(transparent)]
    P2p(#[from] p2p::P2pError),
    /// The chain watcher could not start (its stored progress is unreadable).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The exit's services could not be built from `[exit]` (a wrong
    /// upstream chain, a method outside the built-in list).
    #[error(transparent)]
    ExitServices(#[from] crate::exit::ExitSetupError),
    /// Paid calls (`exit.eth_request`) could not start: the wallet, the
    /// verifying key, the upstream or the pool.
    #[error(transparent)]
    EthRequest(#[from] EthSetupError),
    /// Mail delivery (`exit.mail`) could not start: its queue file, a
    /// password or CA file, the MX resolver.
    #[error(transparent)]
    Mail(#[from] crate::exit::mail::MailSetupError),
    /// The SMTP entry (`[smtp_entry]`) could not start.
    #[error("{0}")]
    SmtpEntry(String),
    /// A thread or listener could not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being started.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Pieces a caller may replace.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// The services an exit offers, by request kind (used when the node is an
    /// exit); `None` = what `[exit]` enables ([`ServiceRouter::from_config`]).
    pub exit_services: Option<ServiceRouter>,
    /// The admission policy; `None` = [`StaticAdmission`] over the topology,
    /// accepting clients on layer 0.
    pub admission: Option<Arc<dyn Admission>>,
    /// Misbehaviour for tests (`test-harness` only): see [`crate::faults`].
    #[cfg(feature = "test-harness")]
    pub faults: crate::faults::Faults,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeOptions")
    }
}

/// A running node.
pub struct RunningNode {
    /// Node id.
    pub node_id: NodeId,
    /// libp2p peer id (the same key).
    pub peer_id: PeerId,
    /// Layer.
    pub layer: u8,
    /// Transport handle.
    pub p2p: P2pHandle,
    /// Bound libp2p addresses.
    pub listen_addrs: Vec<Multiaddr>,
    /// Bound admin HTTP address.
    pub http_addr: SocketAddr,
    /// Bound public HTTP address, if configured.
    pub public_http_addr: Option<SocketAddr>,
    /// Metrics.
    pub metrics: Metrics,
    /// Topology view.
    pub topology: Arc<Topology>,
    /// Epoch keys.
    pub keys: Arc<RwLock<EpochKeyRing>>,
    /// Replay caches.
    pub replay: Arc<ReplayCache>,
    /// Loop bookkeeping.
    pub cover: Arc<CoverState>,
    /// The price book.
    pub prices: Arc<PriceFeed>,
    http_servers: Vec<http::HttpServer>,
    /// The database, to wait for its release at shutdown.
    db: std::sync::Weak<redb::Database>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The SMTP entry (`[smtp_entry]`), when on.
    smtp_entry: Option<crate::smtp_entry::SmtpEntry>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("peer_id", &self.peer_id)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The worker threads `cfg` asks for (`workers.threads`, 0 = one per core).
fn worker_threads(cfg: &NodeConfig) -> usize {
    if cfg.workers.threads == 0 { available_cores() } else { cfg.workers.threads }
}

/// Starts a node on the current tokio runtime.
pub async fn start(cfg: NodeConfig, keys: NodeKeys, opts: NodeOptions) -> Result<RunningNode, NodeError> {
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let self_id = NodeId(keys.node_id());
    let layer = cfg.node.layer;

    // An exit's services first: a wrong upstream chain stops the start before
    // anything runs.
    let exit_services = match (cfg.node.role, &opts.exit_services) {
        (Role::Exit, Some(services)) => Some(services.clone()),
        (Role::Exit, None) => {
            let chain_id = cfg.chain.enabled().then_some(cfg.chain.chain_id);
            Some(ServiceRouter::from_config(&cfg.exit, chain_id, &metrics).await?)
        }
        (Role::Relay, _) => None,
    };

    let trust = cfg.price_trust();
    let oracle_keys = trust.as_ref().map(|t| t.oracles.clone()).unwrap_or_default();
    let prices = Arc::new(PriceFeed::new(trust, &metrics).map_err(|e| NodeError::Config(format!("[prices]: {e}")))?);

    let db = store::open_database(&cfg.node.data_dir.join(store::DATABASE_FILE))?;
    // Paid calls need the database (the wallet's nonce ledger).
    let mut tasks = Vec::new();
    let mut fee_policy = None;
    let exit_services = match (exit_services, opts.exit_services.is_none()) {
        (Some(router), true) => {
            let chain_id = cfg.chain.enabled().then_some(cfg.chain.chain_id);
            match EthRequestConfig::from_section(&cfg.exit, chain_id)? {
                Some(ecfg) => {
                    let (service, task) =
                        EthRequestService::start(ecfg, db.clone(), prices.clone(), &metrics, stop.clone()).await?;
                    #[cfg(feature = "test-harness")]
                    if opts.faults.exit_crash_after_broadcast {
                        service.crash_after_broadcast();
                    }
                    tasks.push(task);
                    fee_policy = Some(service.fee_policy());
                    Some(router.with(nox_protocol::payload::RequestKind::EthRequest, Arc::new(service)))
                }
                None => Some(router),
            }
        }
        (services, _) => services,
    };
    // Mail delivery: its queue file in the data directory and its worker.
    let exit_services = match (exit_services, opts.exit_services.is_none() && cfg.exit.mail) {
        (Some(router), true) => {
            let mail = MailExit::from_section(&cfg.exit, &cfg.node.data_dir, &metrics)?;
            tasks.push(mail.worker);
            Some(router.with(nox_protocol::payload::RequestKind::Mail, Arc::new(mail.service)))
        }
        (services, _) => services,
    };
    let clock = EpochClock::new(cfg.network.epoch_secs).map_err(|e| NodeError::Config(e.to_string()))?;
    let key_dir = crate::epoch_store::epoch_keys_dir(&cfg.node.data_dir);
    let ring = EpochKeyRing::open(&key_dir, clock, cfg.network.grace_secs, unix_now(), &mut rand::rngs::OsRng)?;
    // Every epoch with a stored key keeps its replay log, not only the live
    // ones: a key kept for an epoch ahead (a clock set back) is used again
    // when the clock catches up, and must find its tags.
    let replay_epochs = crate::replay::epochs_to_keep(&ring)?;
    let max_tags = crate::replay::effective_max_tags(
        cfg.replay.max_tags_per_epoch,
        cfg.replay.max_memory_mib,
        worker_threads(&cfg),
        cfg.network.epoch_secs,
    );
    let replay = Arc::new(ReplayCache::open(
        &crate::replay_log::replay_dir(&cfg.node.data_dir),
        Some(&db),
        max_tags,
        Duration::from_millis(cfg.replay.commit_interval_ms),
        &replay_epochs,
    )?);
    metrics.epoch().set(ring.current_epoch() as i64);
    let keys_ring = Arc::new(RwLock::new(ring));

    let topology = Arc::new(Topology::new());
    // With a chain, the registry is the topology: the stored view is applied
    // now, the endpoint is polled once the transport runs.
    let watcher = match WatcherConfig::from_section(&cfg.chain) {
        Some(wcfg) => {
            // A relay's layer is fixed on chain at registration (not derivable
            // here): peers hold `node.layer` to the registry's record.
            let (w, _) = ChainWatcher::new(wcfg, db.clone(), topology.clone(), metrics.clone(), self_id)?;
            Some(w)
        }
        None => None,
    };
    for n in &cfg.topology.nodes {
        let id = n.id_bytes().map_err(|e| NodeError::Config(format!("topology.nodes: {e}")))?;
        let addrs = n.addresses.iter().filter_map(|a| a.parse().ok()).collect();
        topology.add_static(NodeId(id), n.layer, addrs);
    }
    // This node is part of its own topology (its descriptors land here too).
    topology.add_static(self_id, layer, Vec::new());

    let p2p_cfg = P2pConfig {
        listen: cfg.p2p.listen.iter().filter_map(|a| a.parse().ok()).collect(),
        max_connections: cfg.p2p.max_connections,
        max_connections_per_subnet: cfg.p2p.max_connections_per_subnet,
        idle_timeout: Duration::from_secs(cfg.p2p.idle_timeout_secs),
        request_timeout: Duration::from_secs(cfg.p2p.handshake_timeout_secs.max(1)),
        denied: p2p::limits::DeniedCounters {
            total: metrics.event("connection", "denied_total_cap"),
            subnet: metrics.event("connection", "denied_subnet_cap"),
        },
        security: cfg.p2p.security,
    };
    let (mut p2p_handle, events, swarm_task) = p2p::spawn(p2p::keypair_from_identity(&keys.identity)?, p2p_cfg)?;
    tasks.push(swarm_task);
    let listen_addrs = if cfg.p2p.listen.is_empty() { Vec::new() } else { p2p_handle.wait_listening().await };
    let published: Vec<String> = if cfg.p2p.external_addresses.is_empty() {
        listen_addrs.iter().map(|a| a.to_string()).collect()
    } else {
        cfg.p2p.external_addresses.clone()
    };

    let peers = Arc::new(PeerTable::new());
    let (ingest, ingest_rx) = IngestStage::new(cfg.ingest.clone(), &metrics);
    #[cfg(feature = "test-harness")]
    let ingest = ingest.with_faults(opts.faults);
    let ingest = Arc::new(ingest);

    let threads_n = worker_threads(&cfg);
    let worker_cfg = WorkerConfig {
        threads: threads_n,
        queue: cfg.workers.queue,
        max_delay: Duration::from_millis(cfg.mix.max_delay_ms),
        durable_before_forward: cfg.replay.durable_before_forward,
    };
    let wctx = WorkerContext {
        keys: keys_ring.clone(),
        replay: replay.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
        room: ingest.room(),
    };
    let (mut threads, mix_rx) = WorkerStage::spawn(&worker_cfg, ingest_rx, wctx)
        .map_err(|source| NodeError::Io { what: "worker threads", source })?;

    let mix_cfg = MixConfig {
        capacity: cfg.mix.capacity,
        batch_window: (cfg.mix.batch_window_ms > 0).then(|| Duration::from_millis(cfg.mix.batch_window_ms)),
        min_share: cfg.mix.min_share_per_peer,
    };
    // One egress queue, fed by the mix stage, cover traffic, exit replies and
    // claimed replies.
    let (egress_tx, egress_in) = flume::bounded(cfg.egress.queue.max(1));
    let durable = cfg.replay.durable_before_forward.then(|| replay.clone());
    let (released_tx, released_rx) = flume::bounded((cfg.egress.queue / RELEASE_BATCH).max(1));
    let mix_thread = MixStage::spawn(mix_cfg, mix_rx, released_tx, durable, &metrics, stop.clone())
        .map_err(|source| NodeError::Io { what: "mix thread", source })?;
    threads.push(mix_thread);

    let replies = Arc::new(ReplyMailbox::with_share(
        cfg.egress.reply_mailbox,
        cfg.egress.reply_claims_per_peer,
        Duration::from_secs(cfg.egress.reply_ttl_secs),
    ));
    let (final_tx, final_rx) = flume::bounded(cfg.egress.queue.max(1));
    let cover_state = Arc::new(CoverState::new(metrics.clone()));
    // Packet buffers recycled from egress (sealed into a link) to the link
    // readers. At saturation the packets in flight swing by half the ingest
    // queue (its hysteresis) and then some; a pool smaller than that swing
    // frees buffers on one half of the swing and allocates fresh ones on the
    // other, and fresh pages cost page faults and zeroing per packet. So it
    // keeps up to `ingest.queue` buffers (128 MiB at the default of 4,096,
    // what the queue itself holds when full).
    let buffers = cfg.p2p.packet_link.then(|| BufferPool::new(cfg.ingest.queue.max(256)));
    let ectx = EgressContext {
        self_id,
        p2p: p2p_handle.clone(),
        peers: peers.clone(),
        topology: topology.clone(),
        ingest: ingest.clone(),
        exit: final_tx,
        replies: replies.clone(),
        cover: cover_state.clone(),
        metrics: metrics.clone(),
        buffers: buffers.clone(),
        #[cfg(feature = "test-harness")]
        faults: opts.faults,
    };
    let egress_cfg = EgressConfig {
        peer_queue: cfg.egress.peer_queue,
        connect_timeout: Duration::from_secs(cfg.p2p.handshake_timeout_secs.max(1)),
        client_queue_bytes: cfg.egress.client_queue_bytes,
        client_write_timeout: Duration::from_millis(cfg.egress.client_write_timeout_ms),
        packet_link: cfg.p2p.packet_link,
    };
    tasks.push(tokio::spawn(EgressStage::run(egress_cfg, egress_in, released_rx, ectx)));

    // Final payloads: cover on every node, client fragments on to the exit
    // stage of an exit.
    // What this node's descriptors list as its services (an exit's router's kinds).
    let mut offered = 0u16;
    let fragments = if let Some(services) = exit_services {
        let (tx, rx) = flume::bounded(cfg.exit.queue.max(1));
        offered = nox_protocol::payload::RequestKind::mask_of(&services.kinds());
        let xctx = ExitContext { services, egress: egress_tx.clone(), metrics: metrics.clone() };
        tasks.push(tokio::spawn(ExitStage::run((&cfg.exit).into(), rx, xctx)));
        Fragments::Exit(tx)
    } else {
        Fragments::Relay
    };
    {
        let metrics = metrics.clone();
        tasks.push(tokio::spawn(async move { DeliveryStage::run(final_rx, fragments, &metrics).await }));
    }

    let cover_cfg = CoverConfig {
        loop_rate: cfg.cover.loop_rate,
        drop_rate: cfg.cover.drop_rate,
        mean_delay: Duration::from_secs_f64(cfg.cover.mean_delay_ms / 1000.0),
        loop_timeout: Duration::from_secs(cfg.cover.loop_timeout_secs),
    };
    let cctx = CoverContext {
        self_id,
        keys: keys_ring.clone(),
        topology: topology.clone(),
        peers: peers.clone(),
        p2p: p2p_handle.clone(),
        ingest: ingest.clone(),
        egress: egress_tx.clone(),
        state: cover_state.clone(),
        metrics: metrics.clone(),
    };
    tasks.push(tokio::spawn(cover::run(cover_cfg, cctx)));

    // Inbound streams. Packet links and `/nox/packet/1` streams share one
    // count of inbound packet paths per peer.
    let mut control_streams = p2p_handle.streams.clone();
    let packet_paths: Arc<std::sync::Mutex<HashMap<PeerId, usize>>> = Arc::default();
    if cfg.p2p.packet_link {
        let bind = packet_link_address(cfg.p2p.packet_link_listen.as_deref(), &listen_addrs)?;
        let link_metrics = ListenerMetrics {
            accepted: metrics.event("packet_link", "accepted"),
            unknown_ticket: metrics.event("packet_link", "unknown_ticket"),
            handshake_timeout: metrics.event("packet_link", "handshake_timeout"),
            busy: metrics.event("packet_link", "busy"),
            offers_refused: metrics.event("packet_link", "offers_refused"),
        };
        let (listener, mut links) = LinkListener::bind(bind, ListenerConfig::default(), link_metrics, 16)
            .await
            .map_err(|e| NodeError::Config(format!("p2p.packet_link_listen: cannot listen on {bind}: {e}")))?;
        tracing::info!(address = %listener.local_addr(), "accepting packet links");
        let listener = Arc::new(listener);
        let mut asks = control_streams
            .accept(PACKET_LINK_PROTOCOL)
            .map_err(|e| NodeError::Config(format!("stream protocol registered twice: {e}")))?;
        let not_admitted = metrics.event("packet_link", "offer_not_admitted");
        let offers_peers = peers.clone();
        tasks.push(tokio::spawn(async move {
            // Offers: only to a peer admitted as a node, written on its
            // authenticated libp2p stream.
            while let Some((peer, stream)) = asks.next().await {
                if offers_peers.admitted(&peer) != Some(PeerKind::Node) {
                    not_admitted.inc();
                    continue;
                }
                let listener = listener.clone();
                tokio::spawn(async move { serve_offer(&listener, peer, stream).await });
            }
        }));
        let (ingest, peers, loops) = (ingest.clone(), peers.clone(), cover_state.clone());
        let too_many = metrics.dropped("ingest", "too_many_streams");
        let truncated = metrics.dropped("ingest", "truncated_frame");
        let tampered = metrics.dropped("ingest", "link_tampered");
        let open = packet_paths.clone();
        let buffers = buffers.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((peer, mut link)) = links.recv().await {
                let Some(slot) = StreamSlot::take(&open, peer) else {
                    too_many.inc();
                    continue;
                };
                let (ingest, peers, loops, truncated, tampered) =
                    (ingest.clone(), peers.clone(), loops.clone(), truncated.clone(), tampered.clone());
                if let Some(pool) = &buffers {
                    link.use_pool(pool.clone());
                }
                tokio::spawn(async move {
                    read_link(peer, link, &ingest, &peers, &loops, &truncated, &tampered).await;
                    drop(slot);
                });
            }
        }));
    }
    for (protocol, submit) in [(PACKET_PROTOCOL, false), (SUBMIT_PROTOCOL, true)] {
        let mut incoming = control_streams
            .accept(protocol)
            .map_err(|e| NodeError::Config(format!("stream protocol registered twice: {e}")))?;
        let ingest = ingest.clone();
        let peers = peers.clone();
        let loops = cover_state.clone();
        let not_admitted = metrics.dropped("ingest", "stream_not_admitted");
        let too_many = metrics.dropped("ingest", "too_many_streams");
        let truncated = metrics.dropped("ingest", "truncated_frame");
        let open: Arc<std::sync::Mutex<HashMap<PeerId, usize>>> =
            if submit { Arc::default() } else { packet_paths.clone() };
        tasks.push(tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                // Only an admitted peer gets a reader (and its frame buffer),
                // and only a few at a time.
                if peers.admitted(&peer).is_none() {
                    not_admitted.inc();
                    continue;
                }
                let Some(slot) = StreamSlot::take(&open, peer) else {
                    too_many.inc();
                    continue;
                };
                let (ingest, peers, loops, truncated) =
                    (ingest.clone(), peers.clone(), loops.clone(), truncated.clone());
                tokio::spawn(async move {
                    read_stream(peer, stream, submit, &ingest, &peers, &loops, &truncated).await;
                    drop(slot);
                });
            }
        }));
    }

    let admission: Arc<dyn Admission> = opts
        .admission
        .clone()
        .unwrap_or_else(|| Arc::new(StaticAdmission::new(topology.clone(), layer == 0).with_oracles(oracle_keys)));
    let ctl = ControlContext {
        self_id,
        identity: keys.identity.clone(),
        layer,
        role: cfg.node.role.code(),
        services: offered,
        addresses: published.into(),
        fee_policy,
        p2p: p2p_handle.clone(),
        peers: peers.clone(),
        topology: topology.clone(),
        admission,
        keys: keys_ring.clone(),
        replay: replay.clone(),
        replies,
        prices: prices.clone(),
        ingest: ingest.clone(),
        egress: egress_tx,
        metrics: metrics.clone(),
        handshake_timeout: Duration::from_secs(cfg.p2p.handshake_timeout_secs),
        publish_every: Duration::from_secs((cfg.network.epoch_secs / 8).clamp(1, 600)),
    };
    tasks.push(tokio::spawn(control::run(ctl, events)));

    // Connect to every statically known node so descriptors flow at once.
    for (id, _) in topology.node_ids() {
        if id == self_id {
            continue;
        }
        if let Ok(peer) = p2p::peer_id_of(&id) {
            let addrs = topology.addresses(&id);
            let _ = p2p_handle.command(Command::Dial { peer, addrs }).await;
        }
    }

    if let Some(w) = watcher {
        let (changes_tx, changes_rx) = tokio::sync::mpsc::channel(16);
        tasks.push(tokio::spawn(w.run(changes_tx)));
        tasks.push(tokio::spawn(apply_topology_changes(
            changes_rx,
            self_id,
            p2p_handle.clone(),
            peers.clone(),
            topology.clone(),
        )));
    }

    let api = ApiState {
        node_id: self_id,
        layer,
        metrics: metrics.clone(),
        topology: topology.clone(),
        peers,
        keys: keys_ring.clone(),
    };
    let admin = http::serve(cfg.http.listen, http::admin_router(api.clone()))
        .await
        .map_err(|source| NodeError::Io { what: "binding http.listen", source })?;
    let http_addr = admin.addr;
    let mut http_servers = vec![admin];
    let public_http_addr = match cfg.http.public_listen {
        Some(a) => {
            let public = http::serve(a, http::public_router(api))
                .await
                .map_err(|source| NodeError::Io { what: "binding http.public_listen", source })?;
            let addr = public.addr;
            http_servers.push(public);
            Some(addr)
        }
        None => None,
    };
    // The SMTP entry last: its client reaches the mixnet through this node,
    // whose listener is up by now.
    let smtp_entry = if cfg.smtp_entry.enabled {
        Some(crate::smtp_entry::start(&cfg, self_id, layer).await.map_err(|e| NodeError::SmtpEntry(e.to_string()))?)
    } else {
        None
    };
    tracing::debug!(layer, %http_addr, "node assembled");
    Ok(RunningNode {
        node_id: self_id,
        peer_id: p2p_handle.peer_id,
        layer,
        p2p: p2p_handle,
        listen_addrs,
        http_addr,
        public_http_addr,
        metrics,
        topology,
        keys: keys_ring,
        replay,
        cover: cover_state,
        prices,
        http_servers,
        db: Arc::downgrade(&db),
        tasks,
        threads,
        stop,
        smtp_entry,
    })
}

/// Acts on the chain watcher's changes: a node that left is cut off at once
/// (no longer admitted, every connection closed), a node that joined is
/// dialled.
async fn apply_topology_changes(
    mut changes: tokio::sync::mpsc::Receiver<TopologyChange>,
    self_id: NodeId,
    p2p: P2pHandle,
    peers: Arc<PeerTable>,
    topology: Arc<Topology>,
) {
    while let Some(change) = changes.recv().await {
        for id in change.removed.iter().filter(|id| **id != self_id) {
            if let Ok(peer) = p2p::peer_id_of(id) {
                peers.disconnected(&peer);
                let _ = p2p.command(Command::Disconnect { peer }).await;
            }
        }
        for id in change.added.iter().filter(|id| **id != self_id) {
            if let Ok(peer) = p2p::peer_id_of(id) {
                let addrs = topology.addresses(id);
                let _ = p2p.command(Command::Dial { peer, addrs }).await;
            }
        }
        tracing::info!(joined = change.added.len(), left = change.removed.len(), "topology changed on chain");
    }
}

/// How long shutdown waits for the last holder of the database to let it go.
const DATABASE_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Most inbound streams of one protocol one peer may have open at once (a
/// sender needs one; a second covers a reconnection).
pub const MAX_STREAMS_PER_PEER: usize = 2;

/// One of a peer's [`MAX_STREAMS_PER_PEER`] stream slots, given back on drop.
struct StreamSlot {
    open: Arc<std::sync::Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl StreamSlot {
    fn take(open: &Arc<std::sync::Mutex<HashMap<PeerId, usize>>>, peer: PeerId) -> Option<Self> {
        let mut map = open.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(peer).or_insert(0);
        if *n >= MAX_STREAMS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(StreamSlot { open: open.clone(), peer })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut map = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let std::collections::hash_map::Entry::Occupied(mut n) = map.entry(self.peer) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

/// Reads fixed-size frames from one inbound stream into ingest until the
/// stream ends, breaks, or the peer turns out not to be admitted. On the
/// packet path, a reply an entry delivers for one of this node's loops
/// (marked with its SURB id, no longer a Sphinx packet) is taken by `loops`
/// before the workers would try, and fail, to peel it.
async fn read_stream(
    peer: PeerId,
    mut stream: Stream,
    submit: bool,
    ingest: &IngestStage,
    peers: &PeerTable,
    loops: &CoverState,
    truncated: &Counter,
) {
    let frame_len = if submit { SUBMISSION_LEN } else { PACKET_LEN };
    loop {
        let mut frame = vec![0u8; frame_len];
        let mut filled = 0;
        while filled < frame_len {
            match stream.read(&mut frame[filled..]).await {
                Ok(0) => {
                    if filled > 0 {
                        truncated.inc();
                    }
                    return;
                }
                Ok(n) => filled += n,
                Err(_) => {
                    if filled > 0 {
                        truncated.inc();
                    }
                    return;
                }
            }
        }
        if !take_frame(peer, frame, submit, ingest, peers, loops).await {
            return;
        }
    }
}

/// Hands one frame from `peer` to ingest (a reply for one of this node's
/// loops to `loops`); `false` once nothing more from this path is taken: the
/// peer is not admitted (or not as a node), or the node is stopping.
async fn take_frame(
    peer: PeerId,
    frame: Vec<u8>,
    submit: bool,
    ingest: &IngestStage,
    peers: &PeerTable,
    loops: &CoverState,
) -> bool {
    let tier = peers.admitted(&peer);
    let checked =
        if submit { ingest.check_submission(&peer, tier, frame) } else { ingest.check_packet(&peer, tier, frame) };
    let pushed = match checked {
        Ok(inbound) if submit => ingest.push_submission(inbound).await,
        Ok(inbound) if loops.take_reply(&inbound.packet) => Ok(()),
        Ok(inbound) => ingest.push(inbound).await,
        // Nothing from this peer is accepted: stop reading.
        Err(IngestError::NotAdmitted | IngestError::NotANode) => return false,
        Err(_) => Ok(()),
    };
    pushed.is_ok()
}

/// Reads the packets of one packet link into ingest, exactly as a
/// `/nox/packet/1` stream's, until the link ends, fails authentication
/// (`ingest/link_tampered`: the link is dropped), or the peer is no longer
/// admitted as a node.
async fn read_link(
    peer: PeerId,
    mut link: LinkReader,
    ingest: &IngestStage,
    peers: &PeerTable,
    loops: &CoverState,
    truncated: &Counter,
    tampered: &Counter,
) {
    loop {
        let frame = match link.next_frame().await {
            Ok(frame) => frame,
            Err(LinkError::Tampered) => {
                tampered.inc();
                return;
            }
            Err(LinkError::Truncated(_)) => {
                truncated.inc();
                return;
            }
            Err(_) => return,
        };
        if !take_frame(peer, frame, false, ingest, peers, loops).await {
            return;
        }
    }
}

/// Where packet links are accepted: `p2p.packet_link_listen`, or the IP of
/// the first IP listen address on a free port (any address when there is
/// none).
fn packet_link_address(configured: Option<&str>, listening: &[Multiaddr]) -> Result<std::net::SocketAddr, NodeError> {
    if let Some(configured) = configured {
        return configured
            .parse()
            .map_err(|e| NodeError::Config(format!("p2p.packet_link_listen: `{configured}`: {e}")));
    }
    let ip = nox_net::packet_link::first_ip(listening);
    Ok(std::net::SocketAddr::new(ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)), 0))
}

impl RunningNode {
    /// Stops every task and thread and releases the database.
    pub async fn shutdown(self) {
        let RunningNode { http_servers, db, tasks, threads, stop, replay, keys, smtp_entry, .. } = self;
        // Mail submissions first: a session finishes its message (queued,
        // or unanswered and kept by the sender), unsent mail stays queued.
        if let Some(entry) = smtp_entry {
            entry.shutdown().await;
        }
        // The HTTP listeners first: a keep-alive connection would otherwise
        // keep the API's state, and with it the database, alive.
        for server in http_servers {
            server.stop().await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(keys);
        // Joining the threads and the replay cache's last commit (an fsync)
        // block: off the async runtime, so a second signal is still heard.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            if let Err(e) = replay.shutdown() {
                tracing::warn!(error = %e, "replay cache shutdown");
            }
        })
        .await;
        // A task aborted above may have left a blocking write running (the
        // chain watcher's progress save): return once the last holder has
        // let the database go, so the same node can start again at once.
        let deadline = tokio::time::Instant::now() + DATABASE_RELEASE_WAIT;
        while db.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("the database is still held {DATABASE_RELEASE_WAIT:?} after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Adds a node to a chainless node's topology at run time (`LocalNet`)
    /// and connects to it.
    pub async fn add_node(&self, id: NodeId, layer: u8, addrs: Vec<Multiaddr>) {
        self.topology.add_static(id, layer, addrs.clone());
        if let Ok(peer) = p2p::peer_id_of(&id) {
            let _ = self.p2p.command(Command::Dial { peer, addrs }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that keeps its HTTP connection open (keep-alive) does not
    /// keep the database open past shutdown: the node starts again at once.
    #[tokio::test]
    async fn an_open_http_connection_does_not_outlive_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let keys = NodeKeys::generate(&mut rand::rngs::OsRng);
        let cfg = crate::localnet::base_config(dir.path(), 0);
        let node = start(cfg.clone(), keys.clone(), NodeOptions::default()).await.unwrap();
        let mut conn = tokio::net::TcpStream::connect(node.http_addr).await.unwrap();
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: nox\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        node.shutdown().await;
        // The server closed the connection before shutdown returned.
        conn.readable().await.unwrap();
        assert!(matches!(conn.try_read(&mut buf), Ok(0)), "the keep-alive connection is still open");
        let again = start(cfg, keys, NodeOptions::default()).await.expect("the database was released");
        again.shutdown().await;
    }
}
