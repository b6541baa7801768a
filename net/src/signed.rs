//! Statements signed with an operator's certificate key, for decisions
//! taken where no daemon can check the caller: a DR activation runs
//! offline on the DR host, so a second admin's approval of it travels as
//! a file they signed (`tandem approve --dr-activate`). Verifying one
//! checks the certificate against the cluster's CA (as a client
//! certificate, so expiry and purpose count) and the signature against
//! its public key.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::SignatureScheme;

use crate::identity::Peer;
use crate::tls::{self, TlsError, TlsFiles};

/// The schemes a signer may pick, in order (what `tandem certs init` keys
/// use first).
const SCHEMES: [SignatureScheme; 4] =
    [SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ECDSA_NISTP384_SHA384, SignatureScheme::ED25519, SignatureScheme::RSA_PSS_SHA256];

/// A payload's signature, with the certificate that made it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    /// The signer's certificate chain (PEM), leaf first.
    pub cert_pem: String,
    /// TLS `SignatureScheme` number.
    pub scheme: u16,
    pub signature_hex: String,
}

/// Signs `payload` with the key in `files` (an operator's directory).
pub fn sign(files: &TlsFiles, payload: &[u8]) -> Result<Signature, TlsError> {
    let key = tls::private_key(&files.key)?;
    let signing = tls::provider().key_provider.load_private_key(key).map_err(|e| tls::file_error(&files.key, format!("cannot sign with this key: {e}")))?;
    let signer = signing.choose_scheme(&SCHEMES).ok_or_else(|| tls::file_error(&files.key, "a key of a type that cannot sign here"))?;
    let signature = signer.sign(payload).map_err(|e| tls::file_error(&files.key, format!("cannot sign: {e}")))?;
    let cert_pem = std::fs::read_to_string(&files.cert).map_err(|e| tls::file_error(&files.cert, format!("cannot read: {e}")))?;
    Ok(Signature { cert_pem, scheme: u16::from(signer.scheme()), signature_hex: hex::encode(signature) })
}

/// Checks `sig` over `payload` against the CA at `ca`; `source` names the
/// file it came from in errors. Returns who signed.
pub fn verify(ca: &Path, sig: &Signature, payload: &[u8], source: &Path) -> Result<Peer, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(sig.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| tls::file_error(source, "its certificate is not valid PEM"))?;
    let signer = tls::verify_client_chain(ca, &chain, source, "its certificate is ")?;
    let leaf = &chain[0];
    let bytes = hex::decode(&sig.signature_hex).map_err(|_| tls::file_error(source, "its signature is not hex"))?;
    let scheme = SignatureScheme::from(sig.scheme);
    let provider = tls::provider();
    let algs = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or_else(|| tls::file_error(source, format!("its signature scheme {scheme:?} is not supported")))?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| tls::file_error(source, format!("its certificate cannot be read: {e}")))?;
    if !algs.iter().any(|alg| ee.verify_signature(*alg, payload, &bytes).is_ok()) {
        return Err(tls::file_error(source, "the signature does not match its content (altered, or signed by another key)"));
    }
    Ok(signer)
}
