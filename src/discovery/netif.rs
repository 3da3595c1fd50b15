//! This machine's IPv4 interface addresses (simple-mdns does not find them by itself).

use std::net::Ipv4Addr;

/// One IPv4 address of an interface that is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalNet {
    pub addr: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub loopback: bool,
}

impl LocalNet {
    /// Whether `ip` is on this interface's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.mask);
        u32::from(self.addr) & mask == u32::from(ip) & mask
    }
}

/// The IPv4 addresses of every interface that is up (loopback included, marked).
pub fn ipv4_interfaces() -> Vec<LocalNet> {
    let mut out = Vec::new();
    #[cfg(unix)]
    // SAFETY: getifaddrs fills a linked list we only read and then free with freeifaddrs; each
    // sockaddr is read as sockaddr_in only after checking its family is AF_INET.
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
            let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
            if !up || ifa.ifa_addr.is_null() || i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET {
                continue;
            }
            let addr = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let mask = if ifa.ifa_netmask.is_null() {
                Ipv4Addr::BROADCAST
            } else {
                Ipv4Addr::from(u32::from_be((*(ifa.ifa_netmask as *const libc::sockaddr_in)).sin_addr.s_addr))
            };
            out.push(LocalNet {
                addr: Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                mask,
                loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
            });
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
    fn the_loopback_interface_is_listed() {
        assert!(ipv4_interfaces().iter().any(|n| n.loopback && n.addr == Ipv4Addr::LOCALHOST));
    }
}
