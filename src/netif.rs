//! This machine's own network addresses: for mDNS (which does not find them by itself), the
//! certificate's names and the pairing hints; and the daemon's listening socket on them.

use std::net::{IpAddr, Ipv4Addr};

/// Pending connections the kernel keeps for the accept loop (capped by `net.core.somaxconn`):
/// deep enough that a burst of connections does not drop a client's SYN (a one-second retry).
const BACKLOG: i32 = 4096;

/// The daemon's listening socket, as std would make it but with a deeper backlog.
pub(crate) fn listen(address: std::net::SocketAddr) -> std::io::Result<async_net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    async_net::TcpListener::try_from(std::net::TcpListener::from(socket))
}

/// One IPv4 address of an interface that is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalNet {
    pub addr: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub loopback: bool,
}

impl LocalNet {
    /// Whether `ip` is on this interface's subnet.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.mask);
        u32::from(self.addr) & mask == u32::from(ip) & mask
    }
}

/// One address of an interface that is up, with its IPv4 netmask.
struct Address {
    ip: IpAddr,
    mask: Option<Ipv4Addr>,
    loopback: bool,
}

/// The IPv4 addresses of every interface that is up (loopback included, marked).
pub(crate) fn ipv4_interfaces() -> Vec<LocalNet> {
    addresses()
        .into_iter()
        .filter_map(|a| match a.ip {
            IpAddr::V4(addr) => {
                Some(LocalNet { addr, mask: a.mask.unwrap_or(Ipv4Addr::BROADCAST), loopback: a.loopback })
            }
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// The addresses of the interfaces that are up, loopback excluded, IPv4 first.
pub(crate) fn local_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = addresses().into_iter().filter(|a| !a.loopback).map(|a| a.ip).collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

fn addresses() -> Vec<Address> {
    let mut out = Vec::new();
    #[cfg(unix)]
    // SAFETY: getifaddrs fills a linked list that we only read and then free exactly once; every
    // pointer is checked for null, and each sockaddr is cast only after checking its family.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            log::warn!("cannot list network interfaces: {}", std::io::Error::last_os_error());
            return out;
        }
        let mut cursor = list;
        while !cursor.is_null() {
            let ifa = &*cursor;
            cursor = ifa.ifa_next;
            if ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 || ifa.ifa_addr.is_null() {
                continue;
            }
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let mask = (!ifa.ifa_netmask.is_null()).then(|| {
                        Ipv4Addr::from(u32::from_be((*(ifa.ifa_netmask as *const libc::sockaddr_in)).sin_addr.s_addr))
                    });
                    out.push(Address { ip: Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into(), mask, loopback });
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    out.push(Address { ip: IpAddr::from(sin6.sin6_addr.s6_addr), mask: None, loopback });
                }
                _ => {}
            }
        }
        libc::freeifaddrs(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_contain_their_addresses() {
        let net = LocalNet { addr: Ipv4Addr::new(10, 1, 2, 3), mask: Ipv4Addr::new(255, 255, 255, 0), loopback: false };
        assert!(net.contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!net.contains(Ipv4Addr::new(10, 1, 3, 3)));
    }

    #[test]
    fn the_loopback_interface_is_listed_but_never_as_a_local_address() {
        assert!(ipv4_interfaces().iter().any(|n| n.loopback && n.addr == Ipv4Addr::LOCALHOST));
        assert!(local_addresses().iter().all(|ip| !ip.is_loopback()));
    }
}
