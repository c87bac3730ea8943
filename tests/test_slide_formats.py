"""Slide formats beyond the demo's SVS and TIFF: a DICOM WSI series folder, an OME-TIFF whose
only resolution is in its OME-XML, and the adapters' file discovery for every OpenSlide format.

The DICOM series is written here with pydicom (VL Whole Slide Microscopy Image, TILED_FULL, JPEG
baseline frames, one file per level) and read back through OpenSlide 4's own DICOM driver.
"""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
import tifffile

from abmilx.adapters.common import find_slides
from abmilx.slides import Slide, SlideError, ome_xml_mpp

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import JPEGBaseline8Bit, generate_uid  # noqa: E402

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_dicom_level(path, image, tile, mpp, uids) -> None:
    """One pyramid level as a DICOM WSI instance of the series ``uids`` (study, series, frame)."""
    height, width, _ = image.shape
    frames = []
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            block = np.full((tile, tile, 3), 255, np.uint8)
            part = image[y : y + tile, x : x + tile]
            block[: part.shape[0], : part.shape[1]] = part
            frames.append(simplejpeg.encode_jpeg(block, quality=95, colorsubsampling="444"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality, ds.ImageType = "SM", ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PatientID = ds.PatientName = "P"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.Columns = ds.Rows = tile
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = width * mpp / 1000, height * mpp / 1000
    ds.ImagedVolumeDepth = 0.001
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [mpp / 1000, mpp / 1000], 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    optical = Dataset()
    optical.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence, ds.NumberOfOpticalPaths = Sequence([optical]), 1
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort") / "DCM-001"
    folder.mkdir()
    image = noise(600, 800)
    uids = (generate_uid(), generate_uid(), generate_uid())
    write_dicom_level(folder / "level-0.dcm", image, 256, 0.5, uids)
    write_dicom_level(folder / "level-1.dcm", np.ascontiguousarray(image[::2, ::2]), 256, 1.0, uids)
    return folder, image


def test_dicom_series_folder_opens_as_one_slide(dicom_series):
    folder, image = dicom_series
    with Slide(folder) as slide:
        assert slide.info.vendor == "dicom"
        assert (slide.info.width, slide.info.height) == (800, 600)
        assert slide.info.level_count == 2
        assert slide.mpp == pytest.approx(0.5)
        assert slide.info.mpp_source == "metadata"
        pixels = slide.read_level(0, 128, 64, 96, 96)
    # JPEG at quality 95 on pure noise: close to, not equal to, the written pixels
    assert np.abs(pixels.astype(int) - image[64:160, 128:224]).mean() < 12


def test_folder_without_dicom_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SlideError, match=r"is a directory.*DICOM series folder holds \.dcm"):
        Slide(tmp_path)


def write_ome_tiff(path, image, description_mpp: float, unit: str) -> None:
    """A tiled pyramid-less OME-TIFF with its physical pixel size only in the OME-XML."""
    tifffile.imwrite(
        path,
        image,
        tile=(256, 256),
        photometric="rgb",
        compression="jpeg",
        metadata={
            "axes": "YXS",
            "PhysicalSizeX": description_mpp,
            "PhysicalSizeXUnit": unit,
            "PhysicalSizeY": description_mpp,
            "PhysicalSizeYUnit": unit,
        },
        ome=True,
    )


@pytest.mark.parametrize(("size", "unit", "mpp"), [(0.25, "µm", 0.25), (500.0, "nm", 0.5)])
def test_ome_tiff_mpp_comes_from_ome_xml(tmp_path, size, unit, mpp):
    path = tmp_path / "slide.ome.tif"
    write_ome_tiff(path, noise(512, 768), size, unit)
    with Slide(path) as slide:
        assert slide.mpp == pytest.approx(mpp)
        assert slide.info.mpp_source == "ome-xml"


def test_ome_xml_mpp_ignores_other_descriptions():
    assert ome_xml_mpp("Aperio Image Library v12 |MPP = 0.25") is None
    assert ome_xml_mpp('<OME xmlns="x"><Image><Pixels SizeX="1"/></Image></OME>') is None
    assert ome_xml_mpp('<OME xmlns="x"><Image><Pixels PhysicalSizeX="0.4" ') is None  # cut


def test_find_slides_knows_every_openslide_format(tmp_path, dicom_series):
    folder, _ = dicom_series
    names = ["a.svs", "b.tif", "c.tiff", "d.ndpi", "e.vms", "f.vmu", "g.scn", "h.mrxs"]
    names += ["i.svslide", "j.bif", "notes.txt", "k.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "series").symlink_to(folder)
    found = find_slides(tmp_path)
    assert sorted(found) == [*"abcdefghij", "series"]  # a series' id is its folder's name
    assert found["series"] == folder.resolve()
