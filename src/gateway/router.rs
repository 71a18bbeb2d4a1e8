//! The gateway's front router: custody's own endpoints as axum routes, and the Kubernetes proxy
//! as the fallback service for every other path.
//!
//! The router decides only *which* handler answers; each handler authenticates and audits as
//! before. The proxy path costs one route lookup (a radix-tree match on the path) and keeps its
//! own body type end to end, so a request to the cluster goes through no extractor and no
//! middleware. Middleware sits on custody's own routes only (`route_layer`): tracing spans and
//! compression of pages and JSON. There is no request timeout layer on audited routes: a
//! timeout drops the handler's future, and with it the request's audit event; their work is
//! bounded by the stores' own timeouts instead.
//!
//! The client's address reaches handlers as axum's [`ConnectInfo`] extension, which the
//! listener inserts into every request (it is the socket's, or the PROXY header's when the
//! listener requires one).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::routing::any;
use http::StatusCode;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::trace::TraceLayer;

use super::{Gateway, OwnEndpoint};
use crate::proxy::Body;
use custody_web::model::API_PREFIX;

/// The router for `gateway`: its own endpoints, the console, and the proxy as fallback.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let proxy = {
        let gateway = gateway.clone();
        tower::service_fn(move |request: Request| {
            let gateway = gateway.clone();
            async move {
                let peer = client_address(&request);
                Ok::<_, Infallible>(gateway.handle(request, peer).await)
            }
        })
    };
    let requests = super::requests::REQUESTS_PATH;
    let own = Router::new()
        .route(crate::login::WELL_KNOWN_PATH, any(well_known))
        .route(requests, any(own_requests))
        .route(&format!("{requests}/{{*rest}}"), any(own_requests))
        .route(API_PREFIX, any(own_sessions))
        .route(&format!("{API_PREFIX}/{{*rest}}"), any(own_sessions))
        .route_layer(compression())
        .route_layer(TraceLayer::new_for_http());
    let own = if gateway.console().is_some() {
        own.merge(
            crate::console::pages::routes()
                .route_layer(compression())
                .route_layer(TraceLayer::new_for_http()),
        )
    } else {
        own
    };
    own.fallback_service(proxy).with_state(gateway)
}

/// Pages and JSON shrink well; recordings (zstd) and byte ranges pass untouched: a
/// compressed 206 would no longer be the range the client asked for.
fn compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new().compress_when(
        SizeAbove::new(1024)
            .and(NotForContentType::const_new("application/zstd"))
            .and(NotForContentType::const_new("application/octet-stream"))
            .and(NotPartial),
    )
}

/// The client's address the listener put on the request; an unspecified address if a request
/// came without one (only a test's own service can do that).
fn client_address(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

async fn well_known(State(gateway): State<Arc<Gateway>>, request: Request) -> Response<Body> {
    gateway.login_document_response(request.method())
}

async fn own_requests(State(gateway): State<Arc<Gateway>>, request: Request) -> Response<Body> {
    let peer = client_address(&request);
    gateway
        .handle_own::<AxumBody>(request, peer, OwnEndpoint::Requests)
        .await
}

async fn own_sessions(State(gateway): State<Arc<Gateway>>, request: Request) -> Response<Body> {
    let peer = client_address(&request);
    gateway
        .handle_own::<AxumBody>(request, peer, OwnEndpoint::Sessions)
        .await
}

/// Compression only for whole answers: a `206 Partial Content` is passed as it is.
#[derive(Debug, Clone, Copy)]
struct NotPartial;

impl Predicate for NotPartial {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: hyper::body::Body,
    {
        response.status() != StatusCode::PARTIAL_CONTENT
    }
}
