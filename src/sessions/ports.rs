//! Choosing a session's port (§9.5 step 3), race-free.
//!
//! 1.0.21 picked "the first port that binds", so two starters at once picked the same one (H5).
//! The caller holds `sessions/.lock` while it chooses a port and writes the session's config, and
//! a port written into any session's config counts as taken even before its daemon binds it; the
//! bind test then only guards against other programs.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};

/// Sessions use at most this many ports from the base port.
pub(super) const RANGE: u16 = 100;

/// The port for a session: `preferred` (its previous port) if still free, else the first free
/// port from `base`. `taken` holds the ports of the other sessions and of the main daemon.
pub(super) fn choose(
    base: u16,
    preferred: Option<u16>,
    taken: &BTreeSet<u16>,
    mut bindable: impl FnMut(u16) -> bool,
) -> Result<u16, String> {
    let last = base.saturating_add(RANGE - 1);
    let free = |port: u16, bindable: &mut dyn FnMut(u16) -> bool| !taken.contains(&port) && bindable(port);
    if let Some(port) = preferred.filter(|p| (base..=last).contains(p)) {
        if free(port, &mut bindable) {
            return Ok(port);
        }
    }
    (base..=last)
        .find(|port| free(*port, &mut bindable))
        .ok_or_else(|| format!("no free port found for a session in {base}..={last}"))
}

/// Whether `host:port` can be bound right now (with the address reuse the daemon's listener
/// gets, so a port in TIME_WAIT still counts as free).
pub(super) fn bindable(host: IpAddr, port: u16) -> bool {
    TcpListener::bind(SocketAddr::new(host, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_port_neither_taken_nor_busy_wins() {
        let taken = BTreeSet::from([19533, 19534]);
        assert_eq!(choose(19533, None, &taken, |p| p != 19535), Ok(19536));
    }

    #[test]
    fn a_previous_port_is_kept_when_free() {
        let taken = BTreeSet::from([19533]);
        assert_eq!(choose(19533, Some(19540), &taken, |_| true), Ok(19540));
        assert_eq!(choose(19533, Some(19533), &taken, |_| true), Ok(19534), "taken by another session");
        assert_eq!(choose(19533, Some(30000), &taken, |_| true), Ok(19534), "outside the range");
    }

    #[test]
    fn a_full_range_is_an_error() {
        assert!(choose(19533, None, &BTreeSet::new(), |_| false).unwrap_err().contains("no free port"));
        assert_eq!(choose(u16::MAX - 99, None, &BTreeSet::new(), |p| p == u16::MAX), Ok(u16::MAX));
    }
}
