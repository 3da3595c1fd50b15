//! This machine's own network addresses (for certificates, pairing hints and mDNS).

use std::net::IpAddr;

/// The addresses of the interfaces that are up, loopback excluded, IPv4 first.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    #[cfg(unix)]
    // SAFETY: getifaddrs fills a linked list that we only read and then free exactly once;
    // every pointer is checked for null before it is dereferenced.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) == 0 {
            let mut node = head;
            while !node.is_null() {
                let entry = &*node;
                node = entry.ifa_next;
                let up = entry.ifa_flags & libc::IFF_UP as u32 != 0;
                let loopback = entry.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
                if !up || loopback || entry.ifa_addr.is_null() {
                    continue;
                }
                match i32::from((*entry.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        addresses.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        addresses.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            libc::freeifaddrs(head);
        }
    }
    addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    addresses.dedup();
    addresses
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_never_listed() {
        assert!(super::local_addresses().iter().all(|ip| !ip.is_loopback()));
    }
}
