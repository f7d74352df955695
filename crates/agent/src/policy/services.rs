//! What policy resolution knows of services (`toServices`): the catalog
//! built from the service specs and the endpoints' addresses. The policy
//! crate says what a catalog means; this module only gathers it.

use std::collections::BTreeMap;

use twill_policy::services::{BackendAddress, CatalogService, ServiceCatalog};
use twill_service::Service;

use crate::records::EndpointRecord;

/// The catalog for `specs`. A selector-less service's backend that is a
/// local endpoint's address gets that endpoint's identity, as the ipcache
/// gives it: packets to it carry that identity, not the address's CIDR one.
pub fn catalog<'a>(specs: impl Iterator<Item = &'a Service>, endpoints: &[EndpointRecord]) -> ServiceCatalog {
    let by_address: BTreeMap<_, u32> = endpoints.iter().map(|r| (r.ip, r.identity)).collect();
    ServiceCatalog::new(specs.map(|spec| {
        let addresses = spec
            .backends
            .iter()
            .map(|b| BackendAddress {
                address: b.address,
                endpoint_identity: by_address.get(&b.address).copied(),
            })
            .collect();
        CatalogService::new(
            &spec.key.namespace,
            &spec.key.name,
            &spec.labels,
            spec.selector.as_ref(),
            addresses,
        )
    }))
}
