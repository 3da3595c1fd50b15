//! The browser's memory: turns mDNS responses into peer announcements, goodbyes and the
//! queries still needed. Pure (no sockets, time passed in), so it is tested with packets.
//!
//! Records are collected across packets: an instance (`<name>._loopsy._tcp.local`) needs its
//! SRV (port, target host) and TXT (nodeId...), and an IPv4 address of the SRV target. Standard
//! stacks (1.0.21, Avahi, zeroconf) put the A records on a separate host name, possibly in
//! another packet or not at all: when the address is missing we ask for it (an A query for
//! the target) and, failing that, fall back to the packet's source address.
//! TTL 0 on the PTR or SRV is a goodbye. Every field is validated before it leaves this file.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{Packet, ResourceRecord};

use crate::identity::PROTOCOL_VERSION;
use crate::netif::LocalNet;
use crate::peers::Announced;

pub(crate) const SERVICE: &str = "_loopsy._tcp.local";
/// An instance without an address after this long is reported at its packets' source.
const ADDRESS_GRACE: Duration = Duration::from_secs(2);
/// The same unchanged announcement is reported again at most this often.
const REPORT_AGAIN: Duration = Duration::from_secs(10);
/// A question is not repeated sooner than this.
const ASK_AGAIN: Duration = Duration::from_secs(1);
/// Memory bounds: a flood of fake instances cannot grow the cache without limit.
const MAX_INSTANCES: usize = 256;
const MAX_ADDRESSES: usize = 8;

/// What the browser learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    Seen(Announced),
    Goodbye { node_id: String },
}

/// A question to multicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Query {
    /// A (IPv4) records of a host name.
    Address(String),
    /// SRV and TXT of an instance.
    Instance(String),
}

#[derive(Debug, Default)]
struct Instance {
    srv: Option<(String, u16)>,
    /// Keys lowercased.
    txt: HashMap<String, Option<String>>,
    source: Option<Ipv4Addr>,
    expires: Option<Instant>,
    complete_since: Option<Instant>,
    reported: Option<(Announced, Instant)>,
}

/// The browser's cache.
#[derive(Debug)]
pub(super) struct Browser {
    own_id: String,
    instances: HashMap<String, Instance>,
    /// Host name → IPv4 addresses with their expiry.
    hosts: HashMap<String, Vec<(Ipv4Addr, Instant)>>,
    asked: HashMap<Query, Instant>,
}

/// Lowercase, without the trailing dot.
fn key(name: &simple_dns::Name<'_>) -> String {
    name.to_string().trim_end_matches('.').to_ascii_lowercase()
}

impl Browser {
    pub(super) fn new(own_id: &str) -> Browser {
        Browser { own_id: own_id.to_string(), instances: HashMap::new(), hosts: HashMap::new(), asked: HashMap::new() }
    }

    /// Takes in one response packet received from `source`.
    pub(super) fn handle(&mut self, packet: &Packet<'_>, source: Ipv4Addr, nets: &[LocalNet], now: Instant) -> Output {
        let mut out = Output::default();
        let records: Vec<&ResourceRecord<'_>> = packet.answers.iter().chain(&packet.additional_records).collect();
        let suffix = format!(".{SERVICE}");
        let mut touched = Vec::new();
        for record in &records {
            let name = key(&record.name);
            let instance_name = match &record.rdata {
                RData::PTR(ptr) if name == SERVICE => key(&ptr.0),
                RData::SRV(_) | RData::TXT(_) if name.ends_with(&suffix) => name.clone(),
                _ => continue,
            };
            if !instance_name.ends_with(&suffix) {
                continue;
            }
            if record.ttl == 0 {
                if !matches!(record.rdata, RData::TXT(_)) {
                    self.goodbye(&instance_name, &records, &mut out);
                }
                continue;
            }
            if !self.instances.contains_key(&instance_name) && self.instances.len() >= MAX_INSTANCES {
                continue;
            }
            let instance = self.instances.entry(instance_name.clone()).or_default();
            let ttl = Duration::from_secs(u64::from(record.ttl.min(4500)));
            instance.expires = Some(instance.expires.map_or(now + ttl, |e| e.max(now + ttl)));
            instance.source = Some(source);
            match &record.rdata {
                RData::SRV(srv) => instance.srv = Some((key(&srv.target), srv.port)),
                RData::TXT(txt) => instance.txt = txt.attributes(),
                _ => {}
            }
            if !touched.contains(&instance_name) {
                touched.push(instance_name);
            }
        }
        // Addresses: only for host names a known instance points at, so the cache stays small.
        for record in &records {
            let RData::A(a) = &record.rdata else { continue };
            let host = key(&record.name);
            let wanted = self.instances.values().any(|i| i.srv.as_ref().is_some_and(|(t, _)| *t == host));
            if !wanted {
                continue;
            }
            let addresses = self.hosts.entry(host.clone()).or_default();
            let ip = Ipv4Addr::from(a.address);
            addresses.retain(|(known, _)| *known != ip);
            if record.ttl > 0 && addresses.len() < MAX_ADDRESSES {
                addresses.push((ip, now + Duration::from_secs(u64::from(record.ttl.min(4500)))));
            }
            for (name, instance) in &self.instances {
                if instance.srv.as_ref().is_some_and(|(t, _)| *t == host) && !touched.contains(name) {
                    touched.push(name.clone());
                }
            }
        }
        for name in touched {
            self.report(&name, nets, now, false, &mut out);
        }
        out
    }

    /// Expires old records, and reports instances whose address never came.
    pub(super) fn tick(&mut self, nets: &[LocalNet], now: Instant) -> Output {
        let mut out = Output::default();
        self.instances.retain(|_, i| i.expires.is_none_or(|e| e > now));
        for addresses in self.hosts.values_mut() {
            addresses.retain(|(_, expires)| *expires > now);
        }
        self.hosts.retain(|_, a| !a.is_empty());
        self.asked.retain(|_, at| now.duration_since(*at) < ASK_AGAIN);
        let waiting: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.reported.is_none() && i.complete_since.is_some_and(|t| now.duration_since(t) >= ADDRESS_GRACE)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            self.report(&name, nets, now, true, &mut out);
        }
        out
    }

    fn goodbye(&mut self, instance_name: &str, records: &[&ResourceRecord<'_>], out: &mut Output) {
        let from_packet = records.iter().find_map(|r| match &r.rdata {
            RData::TXT(txt) if key(&r.name) == instance_name => txt.attributes().get("nodeid").cloned().flatten(),
            _ => None,
        });
        let known = self.instances.remove(instance_name).and_then(|i| i.txt.get("nodeid").cloned().flatten());
        let node_id = known.or(from_packet).filter(|id| crate::peers::check_node_id("nodeId", id).is_ok());
        if let Some(node_id) = node_id {
            let event = Event::Goodbye { node_id };
            if !out.events.contains(&event) {
                out.events.push(event);
            }
        }
    }

    /// Reports the instance if it is complete (or asks for what is missing).
    fn report(&mut self, name: &str, nets: &[LocalNet], now: Instant, fallback: bool, out: &mut Output) {
        let Some(instance) = self.instances.get_mut(name) else { return };
        let Some((target, port)) = instance.srv.clone() else {
            ask(&mut self.asked, Query::Instance(name.to_string()), now, out);
            return;
        };
        let Some(node_id) = instance.txt.get("nodeid").cloned().flatten() else {
            ask(&mut self.asked, Query::Instance(name.to_string()), now, out);
            return;
        };
        if node_id == self.own_id {
            return;
        }
        let source = instance.source.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let candidates: Vec<Ipv4Addr> =
            self.hosts.get(&target).map(|a| a.iter().map(|(ip, _)| *ip).collect()).unwrap_or_default();
        let address = match choose_address(&candidates, source, nets) {
            Some(address) => address,
            None if fallback && usable(source, source) => source,
            None => {
                instance.complete_since.get_or_insert(now);
                ask(&mut self.asked, Query::Address(target), now, out);
                return;
            }
        };
        // TXT keys are case-insensitive (RFC 6763 §6.4); simple-dns gives them lowercased.
        let text = |key: &str| instance.txt.get(key).cloned().flatten();
        let announced = Announced {
            node_id,
            hostname: text("hostname").unwrap_or_else(|| host_label(&target, name)),
            address: address.to_string(),
            port,
            platform: text("platform").unwrap_or_else(|| "unknown".into()),
            version: text("version").unwrap_or_else(|| "unknown".into()),
            capabilities: text("capabilities")
                .map(|c| c.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
        };
        if let Err(e) = announced.validate() {
            log::debug!("ignoring the mDNS announcement {name} from {source}: {e}");
            return;
        }
        let fresh = match &instance.reported {
            Some((before, at)) => *before != announced || now.duration_since(*at) >= REPORT_AGAIN,
            None => true,
        };
        if fresh {
            instance.reported = Some((announced.clone(), now));
            out.events.push(Event::Seen(announced));
        }
    }
}

fn ask(asked: &mut HashMap<Query, Instant>, query: Query, now: Instant, out: &mut Output) {
    if asked.get(&query).is_none_or(|at| now.duration_since(*at) >= ASK_AGAIN) {
        asked.insert(query.clone(), now);
        out.queries.push(query);
    }
}

/// The host part of an SRV target: `box.local` → `box`; our own targets (the instance name
/// itself) give the instance label.
fn host_label(target: &str, instance: &str) -> String {
    let host = if target == instance { instance.split('.').next().unwrap_or(instance) } else { target };
    host.strip_suffix(".local").unwrap_or(host).to_string()
}

/// Whether `ip` may be a peer's address, judging by where the announcement came from.
fn usable(ip: Ipv4Addr, source: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() && !source.is_loopback())
}

/// Picks the address to reach a peer: the packet's source if the peer lists it, else one on
/// the subnet the packet came in on, else one on any of our subnets, else the first usable.
pub(super) fn choose_address(candidates: &[Ipv4Addr], source: Ipv4Addr, nets: &[LocalNet]) -> Option<Ipv4Addr> {
    let usable: Vec<Ipv4Addr> = candidates.iter().copied().filter(|ip| usable(*ip, source)).collect();
    if usable.contains(&source) {
        return Some(source);
    }
    let arrival = nets.iter().find(|n| !n.loopback && n.contains(source));
    arrival
        .and_then(|net| usable.iter().copied().find(|ip| net.contains(*ip)))
        .or_else(|| usable.iter().copied().find(|ip| nets.iter().any(|n| !n.loopback && n.contains(*ip))))
        .or_else(|| usable.first().copied())
}

/// What one step produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Output {
    pub events: Vec<Event>,
    pub queries: Vec<Query>,
}

/// The TXT of this node, as 1.0.21 advertises it (plus `hostname`).
pub(super) fn own_txt(node_id: &str, hostname: &str) -> Vec<(String, String)> {
    vec![
        ("nodeId".into(), node_id.into()),
        ("version".into(), PROTOCOL_VERSION.into()),
        ("platform".into(), crate::identity::platform().into()),
        ("capabilities".into(), crate::identity::CAPABILITIES.join(",")),
        ("hostname".into(), hostname.chars().take(200).collect()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, PTR, SRV, TXT};
    use simple_dns::{Name, CLASS};

    const PEER: &str = "9d48d4d4-a2c2-4b34-8b2a-14ec07805e65";
    const ME: &str = "00000000-0000-4000-8000-000000000000";

    fn nets() -> Vec<LocalNet> {
        vec![LocalNet { addr: Ipv4Addr::new(10, 0, 0, 1), mask: Ipv4Addr::new(255, 255, 255, 0), loopback: false }]
    }

    fn rr<'a>(name: &'a str, ttl: u32, rdata: RData<'a>) -> ResourceRecord<'a> {
        ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, ttl, rdata)
    }

    /// A 1.0.21-style announcement: SRV target = the bare OS hostname, A records optional.
    fn announcement<'a>(txt: &'a TXT<'a>, ttl: u32, with_a: bool) -> Packet<'a> {
        let instance = "loopsy-9d48d4d4._loopsy._tcp.local";
        let mut packet = Packet::new_reply(0);
        packet.answers.push(rr(SERVICE, ttl, RData::PTR(PTR(Name::new_unchecked(instance)))));
        let srv = SRV { priority: 0, weight: 0, port: 19532, target: Name::new_unchecked("vm") };
        packet.answers.push(rr(instance, ttl, RData::SRV(srv)));
        packet.answers.push(rr(instance, ttl, RData::TXT(txt.clone())));
        if with_a {
            packet.additional_records.push(rr("vm", ttl, RData::A(A::from(Ipv4Addr::new(10, 0, 0, 7)))));
        }
        packet
    }

    fn txt() -> TXT<'static> {
        TXT::new()
            .with_string(Box::leak(format!("nodeId={PEER}").into_boxed_str()))
            .unwrap()
            .with_string("version=1.0.21")
            .unwrap()
            .with_string("platform=linux")
            .unwrap()
            .with_string("capabilities=execute,transfer,context,ai-tasks")
            .unwrap()
    }

    fn seen(out: &Output) -> Option<&Announced> {
        out.events.iter().find_map(|e| match e {
            Event::Seen(a) => Some(a),
            _ => None,
        })
    }

    #[test]
    fn a_1_0_21_announcement_with_its_a_record_is_a_peer() {
        let txt = txt();
        let mut browser = Browser::new(ME);
        let out = browser.handle(&announcement(&txt, 120, true), Ipv4Addr::new(10, 0, 0, 7), &nets(), Instant::now());
        let peer = seen(&out).expect("seen");
        assert_eq!((peer.node_id.as_str(), peer.address.as_str(), peer.port), (PEER, "10.0.0.7", 19532));
        assert_eq!((peer.hostname.as_str(), peer.platform.as_str()), ("vm", "linux"));
        assert_eq!(peer.capabilities.len(), 4);
    }

    #[test]
    fn a_missing_address_is_asked_for_then_taken_from_the_answer() {
        let txt = txt();
        let mut browser = Browser::new(ME);
        let now = Instant::now();
        let out = browser.handle(&announcement(&txt, 120, false), Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
        assert_eq!(out, Output { events: vec![], queries: vec![Query::Address("vm".into())] });
        let mut answer = Packet::new_reply(0);
        answer.answers.push(rr("vm", 120, RData::A(A::from(Ipv4Addr::new(10, 0, 0, 8)))));
        let out = browser.handle(&answer, Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
        assert_eq!(seen(&out).expect("seen").address, "10.0.0.8");
    }

    #[test]
    fn without_any_a_record_the_source_address_is_used_after_a_grace_period() {
        let txt = txt();
        let mut browser = Browser::new(ME);
        let now = Instant::now();
        browser.handle(&announcement(&txt, 120, false), Ipv4Addr::new(10, 0, 0, 9), &nets(), now);
        assert!(seen(&browser.tick(&nets(), now + Duration::from_millis(500))).is_none());
        let out = browser.tick(&nets(), now + ADDRESS_GRACE);
        assert_eq!(seen(&out).expect("seen").address, "10.0.0.9");
    }

    #[test]
    fn ttl_zero_is_a_goodbye_and_own_announcements_are_ignored() {
        let txt = txt();
        let mut browser = Browser::new(ME);
        let now = Instant::now();
        browser.handle(&announcement(&txt, 120, true), Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
        let out = browser.handle(&announcement(&txt, 0, true), Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
        assert_eq!(out.events, vec![Event::Goodbye { node_id: PEER.into() }]);
        let mut own = Browser::new(PEER);
        assert_eq!(
            own.handle(&announcement(&txt, 120, true), Ipv4Addr::new(10, 0, 0, 7), &nets(), now),
            Output::default()
        );
    }

    #[test]
    fn txt_changes_are_reported_and_repeats_are_not() {
        let mut browser = Browser::new(ME);
        let now = Instant::now();
        let first = txt();
        let changed = TXT::new()
            .with_string(Box::leak(format!("nodeId={PEER}").into_boxed_str()))
            .unwrap()
            .with_string("version=1.0.22")
            .unwrap();
        let source = Ipv4Addr::new(10, 0, 0, 7);
        assert!(seen(&browser.handle(&announcement(&first, 120, true), source, &nets(), now)).is_some());
        assert!(seen(&browser.handle(&announcement(&first, 120, true), source, &nets(), now)).is_none());
        let out = browser.handle(&announcement(&changed, 120, true), source, &nets(), now);
        assert_eq!(seen(&out).expect("seen").version, "1.0.22");
    }

    /// Announcements are from anyone on the LAN: any TXT value, SRV target or packet bytes.
    #[test]
    fn any_announcement_is_judged_without_panicking() {
        let inputs = crate::fuzz::inputs(&[PEER, "vm.local", "execute,transfer"], "0123456789abcdef-.,=", 25, 3_000);
        let mut browser = Browser::new(ME);
        let now = Instant::now();
        for (i, text) in inputs.iter().enumerate() {
            let mut txt = TXT::new();
            for key in ["nodeId", "hostname", "platform", "version", "capabilities"] {
                let value = if key == "nodeId" && i % 2 == 0 { PEER } else { text.as_str() };
                let attribute = format!("{key}={value}");
                if let Ok(with) = txt.clone().with_string(Box::leak(attribute.into_boxed_str())) {
                    txt = with;
                }
            }
            let packet = announcement(&txt, (i % 3) as u32 * 60, i % 4 != 0);
            let out = browser.handle(&packet, Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
            if let Some(seen) = seen(&out) {
                assert!(seen.validate().is_ok(), "{seen:?}");
            }
            let target = Box::leak(text.clone().into_boxed_str());
            let mut odd = Packet::new_reply(0);
            let srv = SRV { priority: 0, weight: 0, port: 1, target: Name::new_unchecked(target) };
            odd.answers.push(rr("loopsy-x._loopsy._tcp.local", 120, RData::SRV(srv)));
            odd.answers.push(rr(target, 120, RData::A(A::from(Ipv4Addr::new(10, 0, 0, 9)))));
            let _ = browser.handle(&odd, Ipv4Addr::new(10, 0, 0, 9), &nets(), now);
            let _ = browser.tick(&nets(), now + Duration::from_secs(i as u64));
        }
        let mut rng = crate::fuzz::Rng::new(26);
        let wire = announcement(&txt(), 120, true).build_bytes_vec().unwrap();
        for _ in 0..20_000 {
            let mut bytes = wire.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            bytes.truncate(rng.below(bytes.len() + 1).max(12));
            if let Ok(packet) = Packet::parse(&bytes) {
                let _ = browser.handle(&packet, Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
            }
        }
        for _ in 0..2_000 {
            let random: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
            if let Ok(packet) = Packet::parse(&random) {
                let _ = browser.handle(&packet, Ipv4Addr::new(10, 0, 0, 7), &nets(), now);
            }
        }
    }

    #[test]
    fn invalid_announcements_are_dropped() {
        let mut browser = Browser::new(ME);
        let bad = TXT::new().with_string("nodeId=not-a-uuid").unwrap();
        let out = browser.handle(&announcement(&bad, 120, true), Ipv4Addr::new(10, 0, 0, 7), &nets(), Instant::now());
        assert!(out.events.is_empty(), "{out:?}");
    }

    #[test]
    fn the_address_on_the_arrival_subnet_is_preferred() {
        let source = Ipv4Addr::new(10, 0, 0, 7);
        let other = Ipv4Addr::new(192, 168, 5, 5);
        let same_net = Ipv4Addr::new(10, 0, 0, 8);
        assert_eq!(choose_address(&[other, source], source, &nets()), Some(source));
        assert_eq!(choose_address(&[other, same_net], source, &nets()), Some(same_net));
        assert_eq!(choose_address(&[Ipv4Addr::LOCALHOST, other], source, &nets()), Some(other));
        assert_eq!(choose_address(&[Ipv4Addr::LOCALHOST], source, &nets()), None);
        assert_eq!(choose_address(&[], source, &nets()), None);
    }
}
