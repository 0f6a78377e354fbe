"""Scanning and validating an image tree in MVTec AD layout, and turning it into tfds examples.

  <category>/train/good/*.png                      defect-free training images
  <category>/test/good/*.png                       defect-free test images
  <category>/test/<defect>/*.png                   defective test images, one folder per defect type
  <category>/ground_truth/<defect>/<stem>_mask.png their masks, same size as the image, 0 / 255

Images may be PNG, JPEG, BMP or TIFF (suffix case ignored); grayscale and colour may be mixed (grayscale
images then read back with 3 equal channels, with one warning). A mask is
found as `<stem>_mask.<suffix>` or else `<stem>.<suffix>`. Hidden files and other suffixes are ignored.

`validate` decodes every image and mask before anything is written, so a bad tree fails fast with an
`InputError` naming the first offending file, never half-way through a build. Masks that are not 0/255
(0/1 masks, anti-aliased grey edges) are accepted: 0/1 masks are scaled to 0/255, others thresholded at
127, with one warning. `has_mask` of every example is the tree's `has_masks`: True when the tree has
ground truth (then the all-zero masks of good images are ground truth too), False otherwise.
"""

import hashlib
import os
import pathlib
from typing import Iterator, NamedTuple

from absl import logging
import numpy as np
from PIL import Image

from adjax.data import features
from adjax.errors import InputError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
GOOD = 'good'
_SUBDIRS = ('train', 'test', 'ground_truth')


class Entry(NamedTuple):
  """One image of the tree. `key` is its path relative to the category folder (POSIX)."""
  image_path: pathlib.Path
  mask_path: pathlib.Path | None
  defect_type: str
  key: str


class Tree(NamedTuple):
  """A scanned category folder: `splits` maps 'train' (and 'test' when present) to its entries."""
  category: str
  root: pathlib.Path
  splits: dict[str, list[Entry]]
  has_masks: bool


def category_dir(manual_dir, category: str) -> pathlib.Path:
  """`manual_dir/category`, or `manual_dir` itself when it is that category's folder (same name)."""
  manual_dir = pathlib.Path(manual_dir).expanduser()
  if not manual_dir.is_dir():
    raise InputError(f'{manual_dir}: dataset directory does not exist')
  if (manual_dir / category).is_dir():
    return manual_dir / category
  if manual_dir.name == category and (manual_dir / 'train').is_dir():
    return manual_dir
  found = sorted(p.name for p in manual_dir.iterdir() if p.is_dir() and not p.name.startswith('.'))
  raise InputError(f'{manual_dir / category}: no such category folder (folders found: {found or "none"})')


def _images_in(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in directory.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith('.') and p.is_file())


def _masks_by_stem(mask_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  by_stem = {}
  for path in (_images_in(mask_dir) if mask_dir.is_dir() else []):
    by_stem.setdefault(path.stem, path)
  return by_stem


def scan(root, *, category: str, require_test: bool, require_masks: bool) -> Tree:
  """Lists the tree's images and pairs defective test images with their masks (no decoding).

  Args:
    root: the category folder.
    category: the category name stored with every example.
    require_test: a missing or empty `test/` is an error (else a warning, and a train-only tree).
    require_masks: a missing `ground_truth/` is an error (else the tree has no masks).
  Returns:
    the `Tree`. Raises `InputError` for a missing or empty `train/good/`, a missing `test/` or
    `ground_truth/` when required, or a defective test image without its mask when masks exist.
  """
  root = pathlib.Path(root)
  train_dir = root / 'train' / GOOD
  if not train_dir.is_dir():
    raise InputError(f'{train_dir}: missing folder of defect-free training images')
  train = [Entry(path, None, GOOD, path.relative_to(root).as_posix()) for path in _images_in(train_dir)]
  if not train:
    raise InputError(f'{train_dir}: no training images (expected {", ".join(IMAGE_SUFFIXES)} files)')
  splits = {'train': train}

  test_dir, truth_dir = root / 'test', root / 'ground_truth'
  has_masks = truth_dir.is_dir()
  if require_masks and not has_masks:
    raise InputError(f'{truth_dir}: missing folder of ground-truth masks')
  defect_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith('.')) \
      if test_dir.is_dir() else []
  test = []
  for defect_dir in defect_dirs:
    defect_type = defect_dir.name
    masks = _masks_by_stem(truth_dir / defect_type) if has_masks and defect_type != GOOD else None
    for path in _images_in(defect_dir):
      mask_path = None
      if masks is not None:
        mask_path = masks.get(f'{path.stem}_mask') or masks.get(path.stem)
        if mask_path is None:
          raise InputError(f'{path}: defective test image has no mask '
                           f'(expected {truth_dir / defect_type / (path.stem + "_mask.png")})')
      test.append(Entry(path, mask_path, defect_type, path.relative_to(root).as_posix()))
  if test:
    splits['test'] = test
  elif require_test:
    raise InputError(f'{test_dir}: missing or empty folder of test images')
  else:
    logging.warning('%s: no test images; the dataset has a train split only', test_dir)
  return Tree(category=category, root=root, splits=splits, has_masks=has_masks and bool(test))


def fingerprint(root) -> str:
  """12 hex digits hashing each file's relative path, size and mtime under root's train/test/ground_truth."""
  root = pathlib.Path(root)
  digest = hashlib.sha256()
  for subdir in _SUBDIRS:
    for dirpath, dirnames, filenames in os.walk(root / subdir):
      dirnames.sort()
      for filename in sorted(filenames):
        path = pathlib.Path(dirpath, filename)
        stat = path.stat()
        digest.update(f'{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()[:12]


def _canonical(image: Image.Image) -> Image.Image:
  """Any PIL image as 8-bit 'L' (grayscale) or 'RGB'; 16-bit grayscale is scaled, alpha dropped."""
  if image.mode in ('L', 'RGB'):
    return image
  if image.mode in ('1', 'LA', 'La'):
    return image.convert('L')
  if image.mode.startswith('I;16') or image.mode == 'I':
    array = np.asarray(image, dtype=np.float64) * (255 / 65535)
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
  if image.mode == 'F':
    raise ValueError('floating-point images are not supported')
  return image.convert('RGB')


def read_image(path) -> Image.Image:
  """Decodes an image file fully into 'L' or 'RGB'; any decoding failure is an `InputError` naming it."""
  try:
    with Image.open(path) as image:
      image.load()
      return _canonical(image)
  # PIL reports broken files through many types (OSError, SyntaxError, ValueError, EOFError, zlib.error).
  except Exception as error:  # pylint: disable=broad-except
    raise InputError(f'{path}: cannot decode image ({type(error).__name__}: {error})') from error


def read_mask(path) -> tuple[np.ndarray, bool]:
  """Returns (mask uint8 [height, width] in {0, 255}, whether the file already was 0/255)."""
  mask = np.asarray(read_image(path).convert('L'))
  values = np.unique(mask)
  if np.isin(values, (0, 255)).all():
    return mask, True
  if values.max() <= 1:  # 0/1 masks
    return (mask * 255).astype(np.uint8), False
  return np.where(mask > 127, 255, 0).astype(np.uint8), False


def validate(tree: Tree) -> None:
  """Decodes every image and mask; raises `InputError` naming the first bad file or image/mask pair."""
  converted, grayscale, num_colour = [], [], 0
  for entries in tree.splits.values():
    for entry in entries:
      image = read_image(entry.image_path)
      if image.mode == 'L':
        grayscale.append(entry.image_path)
      else:
        num_colour += 1
      if entry.mask_path is None:
        continue
      mask, was_binary = read_mask(entry.mask_path)
      if mask.shape != (image.height, image.width):
        raise InputError(f'{entry.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but '
                         f'its image {entry.image_path} is {image.width}x{image.height}')
      if not was_binary:
        converted.append(entry.mask_path)
  if converted:
    logging.warning('%d mask(s) of %s are not 0/255 (first: %s); 0/1 masks were scaled to 0/255, '
                    'others thresholded at 127', len(converted), tree.root, converted[0])
  if grayscale and num_colour:
    logging.warning('%d grayscale image(s) among %d colour ones in %s (first: %s); they are read with 3 '
                    'equal channels', len(grayscale), num_colour, tree.root, grayscale[0])
  counts = {split: len(entries) for split, entries in tree.splits.items()}
  logging.info('%s (%s): %s images, masks: %s', tree.root, tree.category, counts, tree.has_masks)


def encode_image(path) -> tuple[bytes, tuple[int, int]]:
  """Returns (PNG bytes of the image in 'L' or 'RGB', (height, width)).

  An 8-bit grayscale or RGB PNG is passed through byte for byte (re-encoding large PNGs is slow);
  anything else (JPEG, BMP, TIFF, palette, alpha, 16-bit) is decoded and stored as a lossless PNG, so
  every reader decodes exactly the pixels PIL decoded here.
  """
  with Image.open(path) as header:
    passthrough = header.format == 'PNG' and header.mode in ('L', 'RGB')
    size = (header.height, header.width)
  if passthrough:
    return pathlib.Path(path).read_bytes(), size
  return features.png_bytes(np.asarray(read_image(path))), size


def examples(tree: Tree, split: str) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) in `adjax.data.features` form for one split of a validated tree."""
  for entry in tree.splits[split]:
    image, size = encode_image(entry.image_path)
    mask = read_mask(entry.mask_path)[0] if entry.mask_path else np.zeros(size, np.uint8)
    yield entry.key, {
        'image': image,
        'mask': features.png_bytes(mask),
        'label': int(entry.defect_type != GOOD),
        'has_mask': tree.has_masks,
        'defect_type': entry.defect_type,
        'category': tree.category,
        'filename': entry.key,
    }
