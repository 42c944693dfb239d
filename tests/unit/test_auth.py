import pytest

from shared.auth import DevelopmentVerifier, FirebaseVerifier, verifier_for
from shared.errors import Unauthenticated
from shared.settings import AuthSettings


def test_development_mode_without_a_token_is_the_configured_developer() -> None:
    assert DevelopmentVerifier("dana").verify(None).uid == "dana"


def test_development_mode_can_act_as_another_user() -> None:
    assert DevelopmentVerifier("dana").verify("Bearer dev:erin").uid == "erin"


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer dev:", "Bearer token"])
def test_development_mode_refuses_malformed_tokens(header: str) -> None:
    with pytest.raises(Unauthenticated):
        DevelopmentVerifier("dana").verify(header)


def test_production_mode_refuses_a_request_without_a_token() -> None:
    with pytest.raises(Unauthenticated, match="no Firebase ID token"):
        FirebaseVerifier("proj").verify(None)


def test_production_mode_refuses_a_token_that_is_not_a_jwt() -> None:
    with pytest.raises(Unauthenticated, match="not valid"):
        FirebaseVerifier("proj").verify("Bearer not-a-jwt")


def test_the_mode_setting_picks_the_verifier() -> None:
    assert isinstance(verifier_for(AuthSettings(mode="development"), "p"), DevelopmentVerifier)
    assert isinstance(verifier_for(AuthSettings(), "p"), FirebaseVerifier)


class CertificateServer:
    """Answers google-auth's certificate fetch with one self-signed certificate, offline."""

    def __init__(self) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def __call__(self, url: str, method: str = "GET", **kwargs: object) -> object:
        import json
        from types import SimpleNamespace

        return SimpleNamespace(
            status=200, headers={}, data=json.dumps({"k1": self.cert_pem}).encode()
        )

    def token(self, **claims: object) -> str:
        import time

        from google.auth import crypt, jwt

        now = int(time.time())
        payload = {"iat": now, "exp": now + 600, "sub": "uid-7", **claims}
        signer = crypt.RSASigner.from_string(self.key_pem, key_id="k1")
        return jwt.encode(signer, payload).decode()


def test_production_mode_accepts_a_properly_signed_firebase_token() -> None:
    server = CertificateServer()
    token = server.token(aud="proj", iss="https://securetoken.google.com/proj")
    assert FirebaseVerifier("proj", transport=server).verify(f"Bearer {token}").uid == "uid-7"


def test_production_mode_refuses_a_token_for_another_project() -> None:
    server = CertificateServer()
    token = server.token(aud="other", iss="https://securetoken.google.com/other")
    with pytest.raises(Unauthenticated):
        FirebaseVerifier("proj", transport=server).verify(f"Bearer {token}")


def test_production_mode_refuses_a_token_from_another_issuer() -> None:
    server = CertificateServer()
    token = server.token(aud="proj", iss="https://evil.example/proj")
    with pytest.raises(Unauthenticated, match="issuer"):
        FirebaseVerifier("proj", transport=server).verify(f"Bearer {token}")
