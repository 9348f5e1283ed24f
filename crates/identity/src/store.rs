//! The workload's current SVID and trust bundle, swappable at any time.
//!
//! [`SvidStore`] holds the current [`Svid`] and [`TrustBundle`] behind
//! `arc-swap`. The cert resolver and the verifiers read the store on every
//! handshake, so [`SvidStore::rotate`] / [`SvidStore::set_bundle`] take effect
//! for the next handshake without rebuilding configs or failing any handshake
//! in between.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{Svid, TrustBundle};

/// The current SVID and trust bundle of one workload, swappable at any time.
pub struct SvidStore {
    svid: ArcSwap<Svid>,
    bundle: ArcSwap<TrustBundle>,
}

impl SvidStore {
    /// A store holding `svid` and `bundle`.
    pub fn new(svid: Svid, bundle: TrustBundle) -> SvidStore {
        SvidStore {
            svid: ArcSwap::from_pointee(svid),
            bundle: ArcSwap::from_pointee(bundle),
        }
    }

    /// Replaces the SVID presented from the next handshake on.
    /// Connections already established keep the SVID they were made with.
    pub fn rotate(&self, svid: Svid) {
        self.svid.store(Arc::new(svid));
    }

    /// Replaces the trust bundle used to verify peers from the next handshake on.
    /// To roll a CA, first set a bundle holding both roots, then rotate SVIDs,
    /// then drop the old root.
    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Arc::new(bundle));
    }

    /// The SVID currently presented.
    pub fn svid(&self) -> Arc<Svid> {
        self.svid.load_full()
    }

    /// The trust bundle currently used to verify peers.
    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }
}

impl fmt::Debug for SvidStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidStore")
            .field("svid", &*self.svid.load())
            .field("bundle", &*self.bundle.load())
            .finish()
    }
}

/// Hands rustls whichever SVID the store holds at handshake time, on both sides.
#[derive(Debug)]
pub struct SvidResolver {
    store: Arc<SvidStore>,
}

impl SvidResolver {
    /// A resolver reading `store`.
    pub fn new(store: Arc<SvidStore>) -> SvidResolver {
        SvidResolver { store }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.store.svid.load().certified_key()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for SvidResolver {
    /// Always our SVID: root hints would only name our own trust domain's CA.
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
