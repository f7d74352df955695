//! Trace observation points: where in the datapath a trace event was
//! seen.
//!
//! Two numberings exist. Cilium's monitor sub types (`TRACE_TO_LXC` = 0
//! and so on, what a flow's `event_type.sub_type` holds) and Hubble's
//! `flow.TraceObservationPoint` enum (what `trace_observation_point`
//! holds), which keeps 0 for "unknown" and so moves to-endpoint to 101.
//! Every other point has the same number in both.

pub const TRACE_TO_LXC: u8 = 0;
pub const TRACE_TO_PROXY: u8 = 1;
pub const TRACE_TO_HOST: u8 = 2;
pub const TRACE_TO_STACK: u8 = 3;
pub const TRACE_TO_OVERLAY: u8 = 4;
pub const TRACE_FROM_LXC: u8 = 5;
pub const TRACE_FROM_PROXY: u8 = 6;
pub const TRACE_FROM_HOST: u8 = 7;
pub const TRACE_FROM_STACK: u8 = 8;
pub const TRACE_FROM_OVERLAY: u8 = 9;
pub const TRACE_FROM_NETWORK: u8 = 10;
pub const TRACE_TO_NETWORK: u8 = 11;
pub const TRACE_FROM_CRYPTO: u8 = 12;
pub const TRACE_TO_CRYPTO: u8 = 13;

/// Hubble's `TraceObservationPoint.TO_ENDPOINT`, the one point whose
/// Hubble number differs from its monitor sub type.
pub const HUBBLE_TO_ENDPOINT: u8 = 101;

/// `monitorAPI.TraceObservationPoints`: monitor sub type to the name
/// Cilium and Hubble print (and `--type trace:NAME` takes).
pub const TRACE_OBSERVATION_POINTS: &[(u8, &str)] = &[
    (TRACE_TO_LXC, "to-endpoint"),
    (TRACE_TO_PROXY, "to-proxy"),
    (TRACE_TO_HOST, "to-host"),
    (TRACE_TO_STACK, "to-stack"),
    (TRACE_TO_OVERLAY, "to-overlay"),
    (TRACE_FROM_LXC, "from-endpoint"),
    (TRACE_FROM_PROXY, "from-proxy"),
    (TRACE_FROM_HOST, "from-host"),
    (TRACE_FROM_STACK, "from-stack"),
    (TRACE_FROM_OVERLAY, "from-overlay"),
    (TRACE_FROM_NETWORK, "from-network"),
    (TRACE_TO_NETWORK, "to-network"),
    (TRACE_FROM_CRYPTO, "from-crypto"),
    (TRACE_TO_CRYPTO, "to-crypto"),
];

/// The name of a monitor sub type.
pub const fn trace_point_name(sub_type: u8) -> Option<&'static str> {
    crate::find_u8(TRACE_OBSERVATION_POINTS, sub_type)
}

/// The monitor sub type called `name`.
pub fn trace_point_by_name(name: &str) -> Option<u8> {
    TRACE_OBSERVATION_POINTS.iter().find(|(_, n)| *n == name).map(|(p, _)| *p)
}

/// Hubble's `TraceObservationPoint` number of a monitor sub type.
pub const fn hubble_observation_point(sub_type: u8) -> u8 {
    if sub_type == TRACE_TO_LXC {
        HUBBLE_TO_ENDPOINT
    } else {
        sub_type
    }
}

/// The monitor sub type of a Hubble `TraceObservationPoint`; `None` for
/// Hubble's "unknown point" (0) and numbers that name no point.
pub const fn trace_sub_type(hubble_point: u8) -> Option<u8> {
    match hubble_point {
        HUBBLE_TO_ENDPOINT => Some(TRACE_TO_LXC),
        0 => None,
        p if trace_point_name(p).is_some() => Some(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    #[test]
    fn names_of_the_points_twill_traces() {
        assert_eq!(trace_point_name(TRACE_TO_LXC), Some("to-endpoint"));
        assert_eq!(trace_point_name(TRACE_TO_STACK), Some("to-stack"));
        assert_eq!(trace_point_name(TRACE_FROM_LXC), Some("from-endpoint"));
        assert_eq!(trace_point_name(14), None);
        assert_eq!(trace_point_by_name("from-network"), Some(10));
        assert_eq!(trace_point_by_name("to-crypto"), Some(13));
        assert_eq!(trace_point_by_name("to-lxc"), None);
    }

    #[test]
    fn hubble_numbers_differ_only_for_to_endpoint() {
        assert_eq!(hubble_observation_point(TRACE_TO_LXC), 101);
        for &(sub_type, name) in TRACE_OBSERVATION_POINTS {
            let hubble = hubble_observation_point(sub_type);
            if sub_type != TRACE_TO_LXC {
                assert_eq!(hubble, sub_type, "{name}");
            }
            assert_eq!(trace_sub_type(hubble), Some(sub_type), "{name} does not round-trip");
        }
        assert_eq!(trace_sub_type(0), None);
        assert_eq!(trace_sub_type(14), None);
        assert_eq!(trace_sub_type(100), None);
    }

    #[test]
    fn every_point_and_name_is_unique() {
        assert_unique("trace point", TRACE_OBSERVATION_POINTS.iter().map(|(p, _)| *p));
        assert_unique("trace point name", TRACE_OBSERVATION_POINTS.iter().map(|(_, n)| *n));
        assert!(TRACE_OBSERVATION_POINTS.iter().all(|(p, _)| *p != HUBBLE_TO_ENDPOINT));
    }
}
