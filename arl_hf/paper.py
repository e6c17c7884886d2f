"""The paper this package implements (cited by the trainer and the model cards); a leaf module."""

ARL_PAPER = {
    "title": "Improving Multimodal Learning via Imbalanced Learning",
    "venue": "ICCV 2025",
    "citation": (
        "@inproceedings{wei2025improving,\n"
        "  title     = {Improving Multimodal Learning via Imbalanced Learning},\n"
        "  author    = {Wei, Shicai and Luo, Chunbo and Luo, Yang},\n"
        "  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},\n"
        "  year      = {2025}\n"
        "}"
    ),
}
