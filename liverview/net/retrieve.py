"""Retrieve series from a PACS into the :class:`RetrieveCache`: C-GET (default) or C-MOVE.

C-GET proposes only the SOP classes the series-level C-FIND reported, each with the storage SCP role
(PS3.4 C.4.3): some PACS fail the whole C-GET when one SOP class of the series was not offered, and an
association holds at most 128 presentation contexts. C-MOVE needs liverview's storage SCP listening
on the node's move port, and the PACS must know that address under liverview's AE title.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000,
                         JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless,
                         JPEGLSNearLossless, RLELossless)
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (ComprehensiveSRStorage, CTImageStorage, EnhancedCTImageStorage, EnhancedSRStorage,
                                  MRImageStorage, SecondaryCaptureImageStorage, SegmentationStorage,
                                  StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove)

from liverview.net.association import MAX_CONTEXTS, AssociationWatch, no_answer, open_association
from liverview.net.cache import RetrieveCache, safe_uid
from liverview.net.errors import CacheError, PacsError, PacsTimeout, PacsUnreachable, PartialRetrieve
from liverview.net.node import PacsNode, RetrieveMethod
from liverview.net.query import SeriesMatch, find_series
from liverview.net.status import (CANCELLED, MOVE_DESTINATION_UNKNOWN, SUCCESS, is_pending, move_destination_unknown,
                                  refusal, status_code)
from liverview.progress import Cancelled, Progress, ShouldStop, check_stop

log = logging.getLogger(__name__)

GET_MODEL = StudyRootQueryRetrieveInformationModelGet
MOVE_MODEL = StudyRootQueryRetrieveInformationModelMove
#: Uncompressed first (every PACS can send it); the compressed ones spare the PACS a transcoding.
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, JPEGLosslessSV1,
                     JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000Lossless, JPEG2000, JPEGLSLossless,
                     JPEGLSNearLossless, RLELossless]
#: Proposed when a PACS reports no SOP class for a series (neither at series nor at image level).
FALLBACK_SOP_CLASSES = (CTImageStorage, EnhancedCTImageStorage, MRImageStorage, SecondaryCaptureImageStorage,
                        SegmentationStorage, ComprehensiveSRStorage, EnhancedSRStorage)
#: (0000,0902) Orthanc answers an unknown C-MOVE destination with 0xC000 instead of 0xA801.
ORTHANC_MOVE_FAILED = 0xC000


@dataclass(frozen=True)
class SeriesProgress:
    """One series' transfer, reported as it goes (`path` is set once the series is published)."""

    series_uid: str
    received: int
    expected: int | None
    path: Path | None = None


@dataclass
class RetrieveResult:
    study_uid: str
    series: list[tuple[SeriesMatch, Path]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return sum(len(list(path.iterdir())) for _, path in self.series)


class _Receiver:
    """The C-STORE handler of one series' transfer: writes each instance into the staging folder.

    `check_series` decodes each instance's header to refuse what belongs to another series (a C-MOVE
    destination port can receive anything); a C-GET's sub-operations are the answer to our own request,
    so they are written as they come, undecoded.
    """

    def __init__(self, series: SeriesMatch, staging: Path, report: Callable[[int], None], check_series: bool) -> None:
        self.series = series
        self.staging = staging
        self.report = report
        self.check_series = check_series
        self.received = 0
        self.error: PacsError | None = None
        self.lock = threading.Lock()

    def handle(self, event) -> int:
        try:
            if self.check_series and str(event.dataset.get("SeriesInstanceUID", "")) != self.series.series_uid:
                return 0xA900  # Data Set does not match SOP Class: not what was asked for
            name = safe_uid(str(event.request.AffectedSOPInstanceUID))
            (self.staging / f"{name}.dcm").write_bytes(event.encoded_dataset(include_meta=True))
        except CacheError as exc:
            self.error = exc
            return 0xA700
        except OSError as exc:
            self.error = CacheError(f"A retrieved image cannot be written to the cache ({exc.strerror}).")
            return 0xA700
        with self.lock:
            self.received += 1
            n = self.received
        self.report(n)
        return SUCCESS


def storage_contexts(sop_classes: Sequence[str], limit: int) -> list[PresentationContext]:
    """One context per SOP class (the fallback list when none is known), each with every transfer syntax."""
    classes = list(dict.fromkeys(sop_classes)) or list(FALLBACK_SOP_CLASSES)
    if len(classes) > limit:
        raise PacsError(f"The series holds {len(classes)} kinds of DICOM objects, more than one connection can carry "
                        f"({limit}); retrieve it with another tool.")
    return [build_context(uid, TRANSFER_SYNTAXES) for uid in classes]


def _series_identifier(series: SeriesMatch) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    return ds


def _describe(series: SeriesMatch) -> str:
    number = f"{series.series_number} " if series.series_number is not None else ""
    return f"series {number}({series.modality or 'unknown modality'})"


def _incomplete(node: PacsNode, series: SeriesMatch, receiver: _Receiver, expected: int | None,
                watch: AssociationWatch, operation: str) -> PacsError:
    """The error for a transfer that ended without a final status (timeout or connection lost)."""
    n, m = receiver.received, expected if expected is not None else "?"
    if watch.idle_s() >= 0.9 * min(node.timeouts.dimse_s, node.timeouts.network_s):
        return PacsTimeout(f"The PACS {node.name} stopped sending {_describe(series)} for "
                           f"{watch.idle_s():.0f} s after {n} of {m} images; nothing of the series was kept. "
                           "Try again later, or ask the PACS administrator whether the PACS is overloaded.", n)
    if n == 0:
        return no_answer(node, operation, watch)
    return PartialRetrieve(f"Only {n} of {m} images of {_describe(series)} arrived: the PACS {node.name} closed the "
                           "connection. Nothing of the series was kept; try again.", n, expected or n)


def _finish(node: PacsNode, series: SeriesMatch, receiver: _Receiver, status: Dataset, expected: int | None,
            cancel_sent: bool, move: bool) -> None:
    """Raise unless `status` says every image of the series arrived."""
    code = status_code(status)
    if receiver.error is not None:
        raise receiver.error
    if code == CANCELLED or cancel_sent:
        raise Cancelled(f"The retrieve of {_describe(series)} was cancelled after {receiver.received} images")
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if move and receiver.received == 0 and code in (MOVE_DESTINATION_UNKNOWN, ORTHANC_MOVE_FAILED):
        raise move_destination_unknown(node)
    if code not in (SUCCESS, 0xB000) and not (failed and receiver.received):
        raise refusal(node, "retrieve", status)
    total = expected if expected is not None else receiver.received + failed
    if failed or receiver.received < total:
        raise PartialRetrieve(f"Only {receiver.received} of {total} images of {_describe(series)} arrived "
                              f"(the PACS reports {failed} failed). Nothing of the series was kept; try again.",
                              receiver.received, total)


def _expected(series: SeriesMatch, status: Dataset) -> int | None:
    if "NumberOfRemainingSuboperations" in status and "NumberOfCompletedSuboperations" in status:
        told = sum(int(status.get(k, 0) or 0) for k in ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                                                        "NumberOfFailedSuboperations", "NumberOfWarningSuboperations"))
        return max(told, series.n_instances or 0)
    return series.n_instances


class _CancelOnStop:
    """Sends C-CANCEL once, from whichever thread first sees `should_stop()` turn true: the store handler
    (PACS that send no pending responses during a C-GET) or the response loop."""

    def __init__(self, should_stop: ShouldStop | None) -> None:
        self.should_stop = should_stop
        self.assoc = None
        self.context_id = 0
        self.sent = False
        self.lock = threading.Lock()

    def bind(self, assoc, context_id: int) -> None:
        self.assoc, self.context_id = assoc, context_id

    def poll(self) -> None:
        if self.should_stop is not None and self.should_stop():
            self.send(1)

    def send(self, msg_id: int) -> None:
        with self.lock:
            if self.sent or self.assoc is None:
                return
            self.sent = True
        self.assoc.send_c_cancel(msg_id, self.context_id)


def _run_retrieve(node: PacsNode, series: SeriesMatch, receiver: _Receiver, send: Callable, cancel: _CancelOnStop,
                  watch: AssociationWatch, move: bool) -> None:
    """Drive a C-GET or C-MOVE response stream; C-CANCEL once `should_stop()` turns true."""
    expected = series.n_instances
    final = Dataset()
    for status, _ in send():
        code = status_code(status)
        if is_pending(code):
            expected = _expected(series, status)
            cancel.poll()
            continue
        final = status
        break
    if status_code(final) is None:
        if cancel.sent:
            raise Cancelled(f"The retrieve of {_describe(series)} was cancelled after {receiver.received} images")
        raise _incomplete(node, series, receiver, expected, watch, "retrieve")
    _finish(node, series, receiver, final, _expected(series, final), cancel.sent, move)


def get_series(node: PacsNode, series: SeriesMatch, staging: Path, on_image: Callable[[int], None],
               should_stop: ShouldStop | None = None) -> int:
    """C-GET one series into `staging`; returns the number of images. Raises PacsError or Cancelled."""
    contexts = storage_contexts(series.sop_classes, MAX_CONTEXTS - 1)
    roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in contexts]
    watch = AssociationWatch()
    cancel = _CancelOnStop(should_stop)
    def report(n: int) -> None:
        on_image(n)
        cancel.poll()

    receiver = _Receiver(series, staging, report, check_series=False)
    with open_association(node, [build_context(GET_MODEL), *contexts], ext_neg=roles, watch=watch,
                          handlers=[(evt.EVT_C_STORE, receiver.handle)]) as assoc:
        context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == GET_MODEL)
        cancel.bind(assoc, context_id)
        _run_retrieve(node, series, receiver, lambda: assoc.send_c_get(_series_identifier(series), GET_MODEL, msg_id=1),
                      cancel, watch, move=False)
    return receiver.received


class MoveDestination:
    """liverview's storage SCP for C-MOVE, listening on the node's move port while a retrieve runs."""

    def __init__(self, node: PacsNode, sop_classes: Sequence[str]) -> None:
        self.node = node
        self.receiver: _Receiver | None = None
        ae = AE(ae_title=node.calling_ae)
        ae.network_timeout = node.timeouts.network_s
        ae.dimse_timeout = node.timeouts.dimse_s
        ae.maximum_pdu_size = 0
        for cx in storage_contexts(sop_classes, MAX_CONTEXTS):
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        try:
            self.server = ae.start_server(("", node.move_port), block=False,
                                          evt_handlers=[(evt.EVT_C_STORE, self._handle)])
        except OSError as exc:
            raise PacsUnreachable(f"liverview cannot listen on port {node.move_port} for C-MOVE ({exc.strerror}): "
                                  "another program uses it. Choose another port in the PACS settings (and tell the "
                                  "PACS administrator), or switch this node to C-GET.") from exc

    def _handle(self, event) -> int:
        receiver = self.receiver
        return receiver.handle(event) if receiver is not None else 0xA900

    def close(self) -> None:
        self.server.shutdown()


def move_series(node: PacsNode, series: SeriesMatch, staging: Path, on_image: Callable[[int], None],
                destination: MoveDestination, should_stop: ShouldStop | None = None) -> int:
    """C-MOVE one series to liverview's own storage SCP (`destination`); returns the number of images."""
    watch = AssociationWatch()
    cancel = _CancelOnStop(should_stop)
    def report(n: int) -> None:
        on_image(n)
        watch.mark_activity()
        cancel.poll()

    receiver = _Receiver(series, staging, report, check_series=True)
    destination.receiver = receiver
    try:
        with open_association(node, [build_context(MOVE_MODEL)], watch=watch) as assoc:
            context_id = assoc.accepted_contexts[0].context_id
            cancel.bind(assoc, context_id)
            _run_retrieve(node, series, receiver,
                          lambda: assoc.send_c_move(_series_identifier(series), node.calling_ae, MOVE_MODEL, msg_id=1),
                          cancel, watch, move=True)
    finally:
        destination.receiver = None
    return receiver.received


def retrieve_study(node: PacsNode, study_uid: str, cache: RetrieveCache, *, series: Sequence[SeriesMatch] | None = None,
                   method: RetrieveMethod | None = None, progress: Progress | None = None,
                   should_stop: ShouldStop | None = None,
                   report: Callable[[SeriesProgress], None] | None = None) -> RetrieveResult:
    """Retrieve `series` of a study (default: all of them, as a series-level C-FIND lists them) into `cache`.

    Each series is published to the cache as soon as it is complete (`report` then gets its path); a
    series already complete in the cache is not fetched again. The first failure stops the retrieve and
    is raised; the series already published stay.
    """
    if series is None:
        series = find_series(node, study_uid, should_stop)
    method = method or node.retrieve_method
    total = sum(s.n_instances or 0 for s in series) or None
    result = RetrieveResult(study_uid)
    done_before = 0
    destination = MoveDestination(node, [c for s in series for c in s.sop_classes]) if method is RetrieveMethod.MOVE else None
    try:
        for one in series:
            check_stop(should_stop, "The retrieve")
            cached = cache.series_dir(study_uid, one.series_uid)
            if cached is not None and one.n_instances is not None and len(list(cached.iterdir())) >= one.n_instances:
                cache.touch(study_uid)
                result.series.append((one, cached))
                done_before += one.n_instances
                if report is not None:
                    report(SeriesProgress(one.series_uid, one.n_instances, one.n_instances, cached))
                continue
            staging = cache.new_staging(one.series_uid)

            def on_image(n: int, one=one, before=done_before) -> None:
                if progress is not None:
                    fraction = (before + n) / total if total else 0.0
                    progress(min(fraction, 1.0), f"Retrieving {_describe(one)}: {n} of {one.n_instances or '?'} images")
                if report is not None:
                    report(SeriesProgress(one.series_uid, n, one.n_instances))

            try:
                if destination is not None:
                    n = move_series(node, one, staging, on_image, destination, should_stop)
                else:
                    n = get_series(node, one, staging, on_image, should_stop)
            except BaseException:
                cache.discard(staging)
                raise
            path = cache.publish(staging, study_uid, one.series_uid)
            result.series.append((one, path))
            done_before += n
            if report is not None:
                report(SeriesProgress(one.series_uid, n, one.n_instances, path))
    finally:
        if destination is not None:
            destination.close()
    return result
