//! A test certificate authority: real SVIDs from a real `identity::Ca`, issued the way
//! the control plane issues them (key made locally, CSR signed), without a control plane.

use identity::{Ca, SpiffeId, Svid, SvidKey, TrustBundle, TrustDomain};
use time::OffsetDateTime;

use crate::harness::HarnessError;

/// A fresh CA for one trust domain, plus shortcuts for minting SVIDs.
#[derive(Debug)]
pub struct TestCa {
    ca: Ca,
}

impl TestCa {
    /// A new root for `trust_domain` (e.g. `"meshwork.local"`), valid from now.
    pub fn new(trust_domain: &str) -> Result<TestCa, HarnessError> {
        let trust_domain: TrustDomain = trust_domain.parse()?;
        let ca = Ca::generate(trust_domain, OffsetDateTime::now_utc())?;
        Ok(TestCa { ca })
    }

    /// The underlying CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The trust bundle holding this CA's root.
    pub fn bundle(&self) -> TrustBundle {
        self.ca.bundle()
    }

    /// The SPIFFE ID `spiffe://<trust domain><path>`.
    pub fn id(&self, path: &str) -> Result<SpiffeId, HarnessError> {
        Ok(SpiffeId::new(self.ca.trust_domain().clone(), path)?)
    }

    /// An SVID for `spiffe://<trust domain><path>` valid for the default TTL from now.
    pub fn svid(&self, path: &str) -> Result<Svid, HarnessError> {
        let id = self.id(path)?;
        let key = SvidKey::generate()?;
        let csr = key.csr_pem(&id)?;
        let now = OffsetDateTime::now_utc();
        let certificate = self
            .ca
            .sign_csr(&csr, &id, identity::DEFAULT_SVID_TTL, now)?;
        Ok(Svid::new(key, certificate)?)
    }
}
