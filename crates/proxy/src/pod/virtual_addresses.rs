//! The pod resolver's table: one virtual address per name, both ways, for the sidecar's
//! life.
//!
//! The app resolves `billing` or `api.stripe.com` through the pod's resolver and gets an
//! address from the virtual range; when it connects there, the capture listener reads that
//! address back as the original destination and looks the name up here. So the connection
//! is tied to the name it was resolved from, whatever IP the name has in the real world,
//! and egress policy by name keeps its meaning. Names are compared lower-cased and without
//! a trailing dot. Addresses are handed out in order and never reused: the table grows by
//! one entry per distinct name, up to the range's size (then new names get nothing).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::VirtualCidr;

/// The name ⇄ virtual address table of one pod (cheap to clone: shared).
#[derive(Debug, Clone)]
pub struct VirtualAddresses {
    range: VirtualCidr,
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    by_name: HashMap<Arc<str>, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, Arc<str>>,
    /// Offset of the next address to hand out in the range.
    next: u64,
}

impl VirtualAddresses {
    /// An empty table over `range`.
    pub fn new(range: VirtualCidr) -> Self {
        VirtualAddresses {
            range,
            table: Arc::default(),
        }
    }

    /// The range addresses come from.
    pub fn range(&self) -> VirtualCidr {
        self.range
    }

    /// The canonical form of a name: lower case, no trailing dot.
    pub fn canonical(name: &str) -> String {
        name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
    }

    /// The address of `name` (any case, trailing dot or not), assigned now if it has none;
    /// `None` once the range is used up (or for the empty name).
    pub fn assign(&self, name: &str) -> Option<Ipv4Addr> {
        let name = VirtualAddresses::canonical(name);
        if name.is_empty() {
            return None;
        }
        // The table only ever gains complete entries: a poisoned lock is still consistent.
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(addr) = table.by_name.get(name.as_str()) {
            return Some(*addr);
        }
        // The network and broadcast addresses are skipped: some clients refuse them.
        let offset = table.next + 1;
        if offset >= self.range.size() - 1 {
            return None;
        }
        let bits = u32::try_from(offset).ok()?;
        let addr = Ipv4Addr::from_bits(self.range.network().to_bits() | bits);
        let name: Arc<str> = Arc::from(name);
        table.next = offset;
        table.by_name.insert(Arc::clone(&name), addr);
        table.by_addr.insert(addr, name);
        Some(addr)
    }

    /// The name `addr` was handed out for.
    pub fn name_of(&self, addr: Ipv4Addr) -> Option<Arc<str>> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.by_addr.get(&addr).cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_address_whatever_its_spelling() {
        let table = VirtualAddresses::new(VirtualCidr::default());
        let billing = table.assign("billing").unwrap();
        assert_eq!(billing, Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(table.assign("Billing.").unwrap(), billing);
        let stripe = table.assign("api.stripe.com.").unwrap();
        assert_ne!(stripe, billing);
        assert_eq!(table.name_of(billing).as_deref(), Some("billing"));
        assert_eq!(table.name_of(stripe).as_deref(), Some("api.stripe.com"));
        assert_eq!(table.name_of(Ipv4Addr::new(198, 19, 9, 9)), None);
        assert_eq!(table.assign("."), None);
    }

    #[test]
    fn a_full_range_hands_out_nothing_more() {
        let table = VirtualAddresses::new("10.0.0.0/30".parse().unwrap());
        assert_eq!(table.assign("a"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(table.assign("b"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(table.assign("c"), None);
        assert_eq!(table.assign("a"), Some(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
