//! TEMPORARY STUB (replaced by the route-model branch).
#[derive(Debug, Clone)]
pub struct HeaderMatcher {}
impl HeaderMatcher {
    pub fn matches(&self, _headers: &http::HeaderMap) -> bool {
        false
    }
}
