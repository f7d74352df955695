//! Cilium's and Hubble's numbers, defined once.
//!
//! Users read these numbers and names in flow logs, metrics and CLI
//! output, and type them into filters, so they must be Cilium's and
//! Hubble's exactly, and the same in every crate. Each family has its
//! consts, one table, and lookups over that table:
//!
//! | family | table | lookups |
//! | --- | --- | --- |
//! | monitor message types | [`MESSAGE_TYPE_NAMES`] | [`message_type_name`], [`message_type_by_name`] |
//! | agent event sub types | [`AGENT_EVENT_SUBTYPES`] | [`agent_event_subtype_by_name`] |
//! | trace observation points | [`TRACE_OBSERVATION_POINTS`] | [`trace_point_name`], [`trace_point_by_name`], [`hubble_observation_point`], [`trace_sub_type`] |
//! | drop reasons | [`DROP_REASONS`] | [`drop_reason_text`] |
//! | reserved identities | [`IDENTITY_NAMES`], [`RESERVED_IDENTITIES`] | [`reserved_identity_name`], [`reserved_identity_by_name`] |
//! | TCP flags | [`TCP_FLAGS`] | [`tcp_flag_name`], [`tcp_flag_by_name`], [`tcp_flag_names`] |
//! | policy match types | [`POLICY_MATCH_TYPES`] | [`policy_match_name`] |
//! | DNS response codes | [`DNS_RCODE_NAMES`] | [`dns_rcode_name`] |
//! | debug message subtypes, CT states | `DBG_*`, [`CT_STATE_TEXT`] | [`ct_state_text`] |
//!
//! Types follow where the numbers travel: trace points and drop reasons
//! are `u8` fields of datapath records; message types and agent event sub
//! types only exist in Hubble's flow API, whose fields are `i32`.

mod debug;
mod dns;
mod drop;
mod identity;
mod message;
mod policy;
mod tcp;
mod trace;

pub use debug::*;
pub use dns::*;
pub use drop::*;
pub use identity::*;
pub use message::*;
pub use policy::*;
pub use tcp::*;
pub use trace::*;

/// First entry of `table` whose key is `key`. `const` so that tables in
/// other crates (the ABI's) can be built from these ones at compile time.
const fn find_u8(table: &'static [(u8, &'static str)], key: u8) -> Option<&'static str> {
    let mut i = 0;
    while i < table.len() {
        if table[i].0 == key {
            return Some(table[i].1);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::collections::HashSet;
    use std::fmt::Debug;
    use std::hash::Hash;

    /// Panics naming the first repeated item: two entries with one number
    /// or one name would make a lookup's answer depend on table order.
    pub fn assert_unique<T: Eq + Hash + Debug>(what: &str, items: impl IntoIterator<Item = T>) {
        let mut seen = HashSet::new();
        for item in items {
            assert!(!seen.contains(&item), "{what}: {item:?} appears twice");
            seen.insert(item);
        }
    }
}
