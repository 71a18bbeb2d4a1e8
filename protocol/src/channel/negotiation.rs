//! Server-side subprotocol negotiation: the first client-offered protocol the server supports.
//!
//! Both `Sec-WebSocket-Protocol` (`apimachinery:pkg/util/httpstream/wsstream/conn.go`
//! `handshake`) and SPDY's `X-Stream-Protocol-Version` (`apimachinery:pkg/util/httpstream/
//! httpstream.go` `Handshake`) pick the client's most preferred protocol that the server knows,
//! after splitting every header line on commas.

/// Splits header values on commas and trims each token, dropping empty tokens.
///
/// Several header lines are accepted and concatenated in order.
pub fn split_protocols<'a, I>(header_values: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    header_values
        .into_iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect()
}

/// The first of `offered` (client preference order) that `supported` contains, returned as the
/// server's own spelling.
pub fn negotiate<'s>(offered: &[&str], supported: &[&'s str]) -> Option<&'s str> {
    offered
        .iter()
        .find_map(|wanted| supported.iter().find(|s| *s == wanted).copied())
}

/// WebSocket negotiation: like [`negotiate`] over the split header values, except that a request
/// offering no protocol at all asks for the empty protocol `""`, which a server may support
/// (the kubelet's legacy servers do).
pub fn negotiate_websocket<'a, 's, I>(header_values: I, supported: &[&'s str]) -> Option<&'s str>
where
    I: IntoIterator<Item = &'a str>,
{
    let offered = split_protocols(header_values);
    if offered.is_empty() {
        return negotiate(&[""], supported);
    }
    negotiate(&offered, supported)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET: [&str; 4] = [
        "v4.channel.k8s.io",
        "v4.base64.channel.k8s.io",
        "channel.k8s.io",
        "",
    ];

    #[test]
    fn splits_comma_lists_over_several_lines() {
        let lines = ["v5.channel.k8s.io, v4.channel.k8s.io", " ,channel.k8s.io "];
        assert_eq!(
            split_protocols(lines),
            ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
        );
    }

    #[test]
    fn picks_the_first_client_protocol_not_the_first_server_one() {
        // kube-rs offers v5 then v4; a legacy kubelet only knows v4.
        let offered = ["v5.channel.k8s.io, v4.channel.k8s.io"];
        assert_eq!(
            negotiate_websocket(offered, &KUBELET),
            Some("v4.channel.k8s.io")
        );
        let offered = ["channel.k8s.io", "v4.channel.k8s.io"];
        assert_eq!(
            negotiate_websocket(offered, &KUBELET),
            Some("channel.k8s.io")
        );
    }

    #[test]
    fn no_offer_means_the_empty_protocol() {
        assert_eq!(negotiate_websocket(std::iter::empty(), &KUBELET), Some(""));
        assert_eq!(negotiate_websocket([" "], &KUBELET), Some(""));
        assert_eq!(
            negotiate_websocket(std::iter::empty(), &["v5.channel.k8s.io"]),
            None
        );
    }

    #[test]
    fn no_match_is_none() {
        assert_eq!(negotiate_websocket(["v5.channel.k8s.io"], &KUBELET), None);
        assert_eq!(negotiate(&[], &["portforward.k8s.io"]), None);
    }

    #[test]
    fn spdy_exec_negotiates_v4_from_kubectl() {
        let server = [
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io",
        ];
        let kubectl = [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io",
        ];
        assert_eq!(
            negotiate(&split_protocols(kubectl), &server),
            Some("v4.channel.k8s.io")
        );
    }
}
