"""Every paper dataset laid out as docs/paper.md's adapter table says, with empty
placeholder slides (the adapters match file names and never open them): what dry runs and the
coverage ledger of the paper configs are checked on."""

import hashlib
from pathlib import Path

UUID = "0b1f2d3c-4a5b-6c7d-8e9f-000000000000"


def touch(root: Path, *names: str) -> None:
    """Empty placeholder slides: the adapters match file names and never open them."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tcga(root: Path, folder: str, project: str, n: int = 6) -> list[str]:
    """GDC-style slides `<uuid>/TCGA-XX-XXXX-01Z-00-DX1.<uuid>.svs` and a clinical.tsv."""
    cases = [f"TCGA-{project}-{k:04d}" for k in range(n)]
    touch(root, *(f"{folder}/slides/{k}/{c}-01Z-00-DX1.{UUID}.svs" for k, c in enumerate(cases)))
    diagnosis = ["Infiltrating duct carcinoma, NOS", "Lobular carcinoma, NOS"]
    write(
        root / folder / "clinical.tsv",
        "case_submitter_id\tproject_id\tprimary_diagnosis\tvital_status\tdays_to_death"
        "\tdays_to_last_follow_up\n"
        + "".join(
            f"{c}\tTCGA-X\t{diagnosis[k % 2]}\t{'Dead' if k % 2 else 'Alive'}"
            f"\t{300 + 50 * k if k % 2 else chr(39) + '--'}\t{200 + 40 * k}\n"
            for k, c in enumerate(cases)
        ),
    )
    return cases


def fake_paper_data(root: Path) -> None:
    """Each paper dataset laid out as docs/paper.md's adapter table says, 6 slides each."""
    ids = [hashlib.md5(str(k).encode()).hexdigest() for k in range(6)]
    touch(root, *(f"data/panda/train_images/{i}.tiff" for i in ids))
    write(
        root / "data/panda/train.csv",
        "image_id,data_provider,isup_grade,gleason_score\n"
        + "".join(f"{i},radboud,{k},3+3\n" for k, i in enumerate(ids)),
    )
    folds = ["train", "train", "train", "val", "test", "test"]
    write(
        root / "data/panda/panda.csv",
        "case,slide,label,fold\n" + "".join(f"{i},{i},{k},{folds[k]}\n" for k, i in enumerate(ids)),
    )
    for folder, project in [("tcga_brca", "A1"), ("tcga_luad", "05"), ("tcga_blca", "BL")]:
        tcga(root / "data", folder, project)
    # the official BRCA survival folds (labels/survival_tcga_brca_3fold/fold_<j>.csv)
    for j in range(3):
        write(
            root / f"data/tcga_brca/survival_tcga_brca_3fold/fold_{j}.csv",
            "Study,ID,Event,Status,WSI,RNA,Label,Split\n"
            + "".join(
                f"TCGA-BRCA,TCGA-A1-{k:04d},{10 + 5 * k},{k % 2},"
                f"TCGA-A1-{k:04d}-01Z-00-DX1.{UUID}.pt,TCGA-A1-{k:04d}.csv,{k % 4},"
                f"{'test' if k % 3 == j else 'train'}\n"
                for k in range(6)
            ),
        )
    for k in range(3):
        touch(root, f"data/tcga_nsclc/luad/TCGA-05-{k:04d}-01Z-00-DX1.{UUID}.svs")
        touch(root, f"data/tcga_nsclc/lusc/TCGA-18-{k:04d}-01Z-00-DX1.{UUID}.svs")
    c16 = root / "data/camelyon16"
    touch(c16, "training/normal/normal_001.tif", "training/tumor/tumor_001.tif",
          "testing/images/test_001.tif", "testing/images/test_002.tif")  # fmt: skip
    write(c16 / "testing/reference.csv", "test_001,Tumor,Macro,Field\ntest_002,Normal,,\n")
    c17 = root / "data/camelyon17"
    touch(c17, *(f"centre_{k}/patient_00{k}_node_{k}.tif" for k in range(4)))
    write(
        c17 / "stage_labels.csv",
        "patient,stage\n"
        + "".join(
            f"patient_00{k}_node_{k}.tif,{'macro' if k % 2 else 'negative'}\n" for k in range(4)
        ),
    )
    # the annotation folders the paper configs' figures read (docs/annotations.md)
    for folder in ("data/panda/train_label_masks", "data/camelyon16/training/lesion_annotations",
                   "data/camelyon16/testing/lesion_annotations", "data/camelyon17/annotations"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
