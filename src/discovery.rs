//! mDNS / DNS-SD discovery of peers (§5.1): advertise this node, browse for others.
//!
//! The only module that knows simple-mdns. Its `ServiceDiscovery` advertises
//! `loopsy-<first 8 of nodeId>._loopsy._tcp.local` (SRV, TXT, A with the addresses we give it,
//! since it finds none itself) and answers queries. Browsing is ours: simple-mdns cannot
//! resolve services announced by standard stacks (1.0.21 puts the A records on a separate host
//! name), does not report goodbyes and does not tell where a packet came from. So one thread
//! owns a multicast socket, feeds every response into [`browse::Browser`], sends the queries it
//! asks for (periodic PTR queries: browsing never stops) and re-announces this node every
//! 30–60 s with a complete packet (PTR included, which simple-mdns's announcements lack and
//! browsers need). On stop it says goodbye both ways: simple-mdns's cache flush and a standard
//! TTL-0 packet.
//!
//! Announcements are hints, never trusted: validated fields only, and a peer enters the
//! registry once the health checker has confirmed it at that address (`Nudge::Candidate`).
//! Nothing here ever sends a key.

mod browse;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use simple_dns::rdata::{RData, A, PTR, SRV, TXT};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, TYPE};
use simple_mdns::sync_discovery::ServiceDiscovery;
use simple_mdns::{InstanceInformation, NetworkScope};

pub(crate) use crate::netif::ipv4_interfaces;
#[cfg(test)]
pub(crate) use crate::netif::LocalNet;
pub(crate) use browse::SERVICE;
use browse::{Browser, Event, Query};

use crate::peers::health::{Nudge, Nudger};

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
/// TTLs of §5.1: SRV and A 120 s, PTR and TXT 4500 s.
const HOST_TTL: u32 = 120;
const SERVICE_TTL: u32 = 4500;
/// How long a receive waits, i.e. how quickly the thread notices a stop.
const POLL: Duration = Duration::from_millis(200);

/// What this node advertises.
#[derive(Debug, Clone)]
pub(crate) struct Advert {
    pub node_id: String,
    pub hostname: String,
    pub port: u16,
    pub addresses: Vec<Ipv4Addr>,
}

impl Advert {
    /// The node's advert for a listener bound to `bound`: a specific IPv4 address, or every
    /// non-loopback IPv4 address when bound to 0.0.0.0.
    pub(crate) fn for_listener(node_id: &str, hostname: &str, bound: SocketAddr) -> anyhow::Result<Advert> {
        let addresses = match bound.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => bail!("the daemon listens on loopback only; nobody could reach it"),
            IpAddr::V4(ip) if !ip.is_unspecified() => vec![ip],
            _ => ipv4_interfaces().into_iter().filter(|n| !n.loopback).map(|n| n.addr).collect(),
        };
        if addresses.is_empty() {
            log::warn!("mDNS: this machine has no IPv4 address besides loopback; advertising without one");
        }
        Ok(Advert { node_id: node_id.to_string(), hostname: hostname.to_string(), port: bound.port(), addresses })
    }

    /// `loopsy-<first 8 characters of the node id>`.
    pub(crate) fn instance(&self) -> String {
        format!("loopsy-{}", &self.node_id[..8.min(self.node_id.len())])
    }
}

/// The running discovery; [`Discovery::stop`] says goodbye.
pub(crate) struct Discovery {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Discovery {
    /// Starts advertising and browsing; discoveries go to the health checker through `nudger`.
    pub(crate) fn start(advert: Advert, nudger: Nudger) -> anyhow::Result<Discovery> {
        let mut info = InstanceInformation::new(advert.instance()).with_port(advert.port);
        for address in &advert.addresses {
            info = info.with_ip_address(IpAddr::V4(*address));
        }
        for (key, value) in browse::own_txt(&advert.node_id, &advert.hostname) {
            info = info.with_attribute(key, Some(value));
        }
        let responder = ServiceDiscovery::new_with_scope(info, SERVICE, HOST_TTL, None, NetworkScope::V4)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("starting the mDNS responder (is there a route for 224.0.0.0/4?)")?;
        let socket = browse_socket().context("opening the mDNS browse socket")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mdns-browse".into())
            .spawn(move || run(socket, responder, advert, nudger, flag))
            .context("starting the mDNS thread")?;
        Ok(Discovery { stop, thread: Some(thread) })
    }

    /// Says goodbye and stops browsing.
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the mDNS port can be bound, shared with other responders (`loopsy doctor` asks
/// while no daemon holds it): binds it and lets go.
pub(crate) fn can_share_mdns_port() -> std::io::Result<()> {
    shared_mdns_socket().map(drop)
}

/// A UDP socket on the mDNS port, shared with other responders (SO_REUSEADDR/SO_REUSEPORT).
fn shared_mdns_socket() -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    Ok(socket)
}

fn browse_socket() -> std::io::Result<UdpSocket> {
    let socket = shared_mdns_socket()?;
    socket.join_multicast_v4(&MDNS_GROUP, &Ipv4Addr::UNSPECIFIED)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket.into())
}

/// When to do something again: soon at first (lost packets), then every `steady` ± a third.
struct Cadence {
    next: Instant,
    early: Vec<Duration>,
    steady: Duration,
}

impl Cadence {
    fn new(early: &[u64], steady: Duration) -> Cadence {
        Cadence {
            next: Instant::now(),
            early: early.iter().rev().map(|ms| Duration::from_millis(*ms)).collect(),
            steady,
        }
    }

    fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        let wait = self.early.pop().unwrap_or_else(|| {
            let random = crate::random::bytes(1)[0] as f64 / 255.0;
            self.steady.mul_f64(1.0 + random)
        });
        self.next = now + wait;
        true
    }
}

fn run(socket: UdpSocket, mut responder: ServiceDiscovery, advert: Advert, nudger: Nudger, stop: Arc<AtomicBool>) {
    log::info!("mDNS: advertising {}.{SERVICE} on {:?} port {}", advert.instance(), advert.addresses, advert.port);
    let mut browser = Browser::new(&advert.node_id);
    let mut nets = ipv4_interfaces();
    let mut nets_read = Instant::now();
    // Announce at once, 1 s and 3 s later (lost packets), then every 30–60 s.
    let mut announce = Cadence::new(&[1000, 2000], Duration::from_secs(30));
    // Ask who is there at once, 1 s and 3 s later, then every 20–40 s.
    let mut ask = Cadence::new(&[1000, 2000], Duration::from_secs(20));
    let mut buf = vec![0u8; 9000];
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now.duration_since(nets_read) > Duration::from_secs(30) {
            nets = ipv4_interfaces();
            nets_read = now;
        }
        if announce.due(now) {
            responder.announce(false);
            send(&socket, own_records(&advert, false));
        }
        if ask.due(now) {
            send(&socket, question(&[(SERVICE, TYPE::PTR)]));
        }
        let mut output = browse::Output::default();
        match socket.recv_from(&mut buf) {
            Ok((len, SocketAddr::V4(from))) => match Packet::parse(&buf[..len]) {
                Ok(packet) if packet.has_flags(PacketFlag::RESPONSE) => {
                    output = browser.handle(&packet, *from.ip(), &nets, Instant::now());
                }
                Ok(_) => {} // a query: simple-mdns answers those
                Err(e) => log::debug!("mDNS: malformed packet from {from}: {e}"),
            },
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                log::warn!("mDNS: receive failed: {e}");
                std::thread::sleep(POLL);
            }
        }
        let later = browser.tick(&nets, Instant::now());
        output.events.extend(later.events);
        output.queries.extend(later.queries);
        for query in output.queries {
            match &query {
                Query::Address(host) => {
                    log::debug!("mDNS: asking for the address of {host}");
                    send(&socket, question(&[(host, TYPE::A)]))
                }
                Query::Instance(name) => send(&socket, question(&[(name, TYPE::SRV), (name, TYPE::TXT)])),
            }
        }
        for event in output.events {
            match event {
                Event::Seen(announced) => nudger.send(Nudge::Candidate(announced, crate::peers::Via::Mdns)),
                Event::Goodbye { node_id } => nudger.send(Nudge::Goodbye(node_id)),
            }
        }
    }
    // simple-mdns's goodbye (a cache flush that its own peers honour), then the standard one.
    responder.remove_service_from_discovery();
    for _ in 0..2 {
        send(&socket, own_records(&advert, true));
    }
    log::info!("mDNS: said goodbye");
    // The responder's threads have no way to stop; they end with the process.
    std::mem::forget(responder);
}

fn send(socket: &UdpSocket, packet: Option<Vec<u8>>) {
    let Some(bytes) = packet else { return };
    if let Err(e) = socket.send_to(&bytes, (MDNS_GROUP, MDNS_PORT)) {
        log::warn!("mDNS: cannot send: {e}");
    }
}

/// A query packet asking each `(name, type)`.
fn question(asked: &[(&str, TYPE)]) -> Option<Vec<u8>> {
    let mut packet = Packet::new_query(0);
    for (name, kind) in asked {
        let name = Name::new(name).ok()?;
        packet.questions.push(Question::new(name, (*kind).into(), CLASS::IN.into(), false));
    }
    packet.build_bytes_vec_compressed().ok()
}

/// This node's PTR, SRV, TXT and A records in one response; TTL 0 for a goodbye.
fn own_records(advert: &Advert, goodbye: bool) -> Option<Vec<u8>> {
    let ttl = |normal: u32| if goodbye { 0 } else { normal };
    let instance = format!("{}.{SERVICE}", advert.instance());
    let name = Name::new(&instance).ok()?;
    let txt_strings: Vec<String> =
        browse::own_txt(&advert.node_id, &advert.hostname).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut txt = TXT::new();
    for entry in &txt_strings {
        txt.add_string(entry).ok()?;
    }
    let mut packet = Packet::new_reply(0);
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    fn record<'a>(name: &Name<'a>, ttl: u32, rdata: RData<'a>) -> ResourceRecord<'a> {
        ResourceRecord::new(name.clone(), CLASS::IN, ttl, rdata)
    }
    packet.answers.push(ResourceRecord::new(
        Name::new_unchecked(SERVICE),
        CLASS::IN,
        ttl(SERVICE_TTL),
        RData::PTR(PTR(name.clone())),
    ));
    let srv = SRV { priority: 0, weight: 0, port: advert.port, target: name.clone() };
    packet.answers.push(record(&name, ttl(HOST_TTL), RData::SRV(srv)).with_cache_flush(true));
    packet.answers.push(record(&name, ttl(SERVICE_TTL), RData::TXT(txt)).with_cache_flush(true));
    for address in &advert.addresses {
        packet
            .additional_records
            .push(record(&name, ttl(HOST_TTL), RData::A(A::from(*address))).with_cache_flush(true));
    }
    packet.build_bytes_vec_compressed().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert() -> Advert {
        Advert {
            node_id: "9d48d4d4-a2c2-4b34-8b2a-14ec07805e65".into(),
            hostname: "box".into(),
            port: 19532,
            addresses: vec![Ipv4Addr::new(10, 0, 0, 7)],
        }
    }

    #[test]
    fn our_announcement_is_understood_by_our_browser_and_our_goodbye_too() {
        let nets =
            [LocalNet { addr: Ipv4Addr::new(10, 0, 0, 1), mask: Ipv4Addr::new(255, 255, 255, 0), loopback: false }];
        let mut browser = Browser::new("00000000-0000-4000-8000-000000000000");
        let now = Instant::now();
        let bytes = own_records(&advert(), false).unwrap();
        let out = browser.handle(&Packet::parse(&bytes).unwrap(), Ipv4Addr::new(10, 0, 0, 7), &nets, now);
        let Some(Event::Seen(peer)) = out.events.first() else { panic!("{out:?}") };
        assert_eq!((peer.address.as_str(), peer.port, peer.hostname.as_str()), ("10.0.0.7", 19532, "box"));
        assert_eq!(peer.version, "1.0.21");
        let bytes = own_records(&advert(), true).unwrap();
        let out = browser.handle(&Packet::parse(&bytes).unwrap(), Ipv4Addr::new(10, 0, 0, 7), &nets, now);
        assert_eq!(out.events, vec![Event::Goodbye { node_id: advert().node_id }]);
    }

    #[test]
    fn the_instance_name_is_loopsy_and_eight_characters_of_the_node_id() {
        assert_eq!(advert().instance(), "loopsy-9d48d4d4");
    }
}
