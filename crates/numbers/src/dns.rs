//! DNS response codes (RFC 1035, 2136, 6891) with the names Hubble's DNS
//! metrics label them by.

pub const DNS_RCODE_NAMES: &[(u32, &str)] = &[
    (0, "No Error"),
    (1, "Format Error"),
    (2, "Server Failure"),
    (3, "Non-Existent Domain"),
    (4, "Not Implemented"),
    (5, "Query Refused"),
    (6, "Name Exists when it should not"),
    (7, "RR Set Exists when it should not"),
    (8, "RR Set that should exist does not"),
    (9, "Server Not Authoritative for zone"),
    (10, "Name not contained in zone"),
    (16, "Bad OPT Version"),
];

/// The name of `rcode`, or its number for codes without one.
pub fn dns_rcode_name(rcode: u32) -> String {
    match DNS_RCODE_NAMES.iter().find(|(code, _)| *code == rcode) {
        Some((_, name)) => name.to_string(),
        None => rcode.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_unknown_codes_print_as_numbers() {
        crate::test_util::assert_unique("rcode", DNS_RCODE_NAMES.iter().map(|(c, _)| *c));
        crate::test_util::assert_unique("rcode name", DNS_RCODE_NAMES.iter().map(|(_, n)| *n));
        assert_eq!(dns_rcode_name(5), "Query Refused");
        assert_eq!(dns_rcode_name(23), "23");
    }
}
