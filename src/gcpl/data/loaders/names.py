"""Human-readable class names for the datasets whose files only carry codes or numbers."""

# Oxford Flowers102, in label order (label 1 = "pink primrose"): the list used by CLIP and by the
# GCPL authors' code ("air plant" is the VGG list's "ball moss").
FLOWERS102 = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
    "english marigold", "tiger lily", "moon orchid", "bird of paradise", "monkshood",
    "globe thistle", "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke",
    "sweet william", "carnation", "garden phlox", "love in the mist", "mexican aster",
    "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip",
    "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink and yellow dahlia", "cautleya spicata",
    "japanese anemone", "black-eyed susan", "silverbush", "californian poppy", "osteospermum",
    "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania", "azalea",
    "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus", "toad lily",
    "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow",
    "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "air plant",
    "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia",
    "blanket flower", "trumpet creeper", "blackberry lily",
]
assert len(FLOWERS102) == 102

# Kather et al. 2016 colorectal texture tiles: folder code -> name (in the folders' 01..08 order).
CRC5K = {
    "TUMOR": "tumor",
    "STROMA": "stroma",
    "COMPLEX": "complex",
    "LYMPHO": "lympho",
    "DEBRIS": "debris",
    "MUCOSA": "mucosa",
    "ADIPOSE": "adipose",
    "EMPTY": "empty",
}

# ISIC 2018 task 3 ground-truth columns -> name (in the CSV's column order).
ISIC2018 = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}

# LC25000 folders -> name.
LC25000 = {
    "colon_aca": "colon adenocarcinoma",
    "colon_n": "benign colon",
    "lung_aca": "lung adenocarcinoma",
    "lung_n": "benign lung",
    "lung_scc": "lung squamous cell carcinoma",
}

# Corn seeds (Kaggle "It's Corn" / PogChamps #3) labels.
CORNSEEDS = ["pure", "broken", "discolored", "silkcut"]
