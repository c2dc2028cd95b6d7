"""--embed_crops: which crops of each image --mode embed writes (model/embed.py), parsed
without TensorFlow so that main.py checks the flag before anything runs.

`center` is one central square; `multiview` the mean of ten views (the centre and the four
corners, and their mirror images), our reading of LEO's multiview embeddings. A side may be
given as `kind:<side>`; by default LEO's margin (80 of 84) is scaled to the image size.
"""
from typing import NamedTuple

CROPS = ('center', 'multiview')
LEO_MARGIN = (4, 84)         # LEO's 80x80 crops of 84x84 images


class Crop(NamedTuple):
    kind: str     # 'center' or 'multiview'
    side: int     # crop side in pixels

    @property
    def name(self):
        return self.kind


def default_side(side):
    """LEO's 4-pixel margin of 84, scaled: 84 -> 80, 28 -> 27, 32 -> 30."""
    margin, of = LEO_MARGIN
    return side - max(1, int(round(margin * side / of)))


def parse_crops(spec, image_shape=None):
    """--embed_crops -> [Crop]; ValueError for an unknown kind, a repeated one, a side that
    is not a positive integer or does not fit the image, or multiview without room.
    image_shape None: the syntax only (the sides are checked once the data is known)."""
    if image_shape is not None and len(image_shape) != 3:
        raise ValueError(f'--mode embed needs images; this dataset holds inputs of shape '
                         f'{tuple(image_shape)}')
    limit = None if image_shape is None else min(int(image_shape[0]), int(image_shape[1]))
    crops = []
    for item in [s.strip() for s in (spec or '').split(',') if s.strip()]:
        kind, _, side = item.partition(':')
        if kind not in CROPS:
            raise ValueError(f'--embed_crops: unknown crop {kind!r}; use {" or ".join(CROPS)}, '
                             'optionally with :<side> (e.g. center:80)')
        if any(c.kind == kind for c in crops):
            raise ValueError(f'--embed_crops names {kind} twice')
        if side:
            if not side.isdigit() or int(side) < 1:
                raise ValueError(f'--embed_crops {item}: the crop side must be a positive '
                                 'integer number of pixels')
            side = int(side)
        elif limit is not None:
            side = default_side(limit)
        if limit is not None and side > limit:
            raise ValueError(f'--embed_crops {item}: a {side}x{side} crop is larger than the '
                             f'{image_shape[0]}x{image_shape[1]} images')
        if limit is not None and kind == 'multiview' and side >= limit:
            raise ValueError(f'--embed_crops {item}: multiview needs crops smaller than the '
                             f'{image_shape[0]}x{image_shape[1]} images (its five crops would '
                             'all be the whole image)')
        crops.append(Crop(kind, max(side or 1, 1)))
    if not crops:
        raise ValueError(f'--embed_crops is empty; give {" and/or ".join(CROPS)}')
    return crops
