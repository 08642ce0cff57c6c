"""The CPS card signer through the cards service: a real pcscd, Debian's vpcd reader driver
and the virtual CPS of ``drivers/cps_vitale`` (RSA key inside the card, PIN counter); the
card signs the digest and pyhanko builds the PAdES signature around it. Skips, saying why,
where pcscd or vpcd cannot run (the ``vpcd_port`` fixture of the cards tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.config import Settings
from drivers.cps_vitale.errors import SimulatorError
from drivers.cps_vitale.virtual import pki
from services.documents import render, signing, workflow
from tests.test_cards import READER, Inserted, cps, vpcd_port
from tests.test_documents import _rich_model

__all__ = ["vpcd_port"]  # the cards tests' fixture, used here


def test_virtual_cps_signs_a_document_through_pcscd(vpcd_port: int, tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pki.test_ca()[1].public_bytes(Encoding.PEM))
    settings = Settings(cards_reader=READER, cards_read_timeout_s=5, documents_signer="card")
    pdf = render.render(_rich_model(), "pdf")
    inserted = Inserted(vpcd_port, cps())
    try:
        inserted.__enter__()
    except SimulatorError as exc:  # the cards tests fail loudly on this; here it is context
        pytest.skip(f"vpcd not reachable on port {vpcd_port} (another pcscd?): {exc.message}")
    try:
        signer = workflow.configured_signer(settings, pin="1234")
        assert isinstance(signer, signing.CardSigner)
        signed, subject = signing.sign_pdf(pdf, signer, reason="BPM", location="Paris")
        with pytest.raises(signing.SigningError):
            signing.sign_pdf(
                pdf, workflow.configured_signer(settings, pin="0000"), reason="r", location=None
            )
    finally:
        inserted.__exit__(None, None, None)
    assert "DURAND" in subject
    result = signing.verify_pdf(signed, signing.load_trust_roots(roots))
    assert result.intact
    assert result.valid
    assert result.trusted  # the virtual cards' test CA is the trust root
    assert result.coverage == "entire_file"
    with pytest.raises(signing.SigningError, match="PIN"):
        signing.sign_pdf(pdf, signing.CardSigner(settings, pin=None), reason="r", location=None)
