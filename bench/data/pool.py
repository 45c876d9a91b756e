"""The pretraining pool: chosen rows of the decoded image arrays, read when needed instead of copied into memory.

A ``Pool`` is a list of rows (positions in the train array, then in the unlabeled array) over arrays that are
either in memory or memory-mapped ``.npy`` files of the cache. A memory-mapped array is read row by row with
``os.pread`` into the batch's own buffer: what is read stays in the kernel's page cache (reclaimable), not in
the process, so a pool larger than memory is trained on at the cost of reading it once per epoch.

``Pool.on(device, mode)`` is what pretraining receives: the whole pool as a uint8 tensor on the device when it
fits (``resident``), or a ``StreamedPool`` that reads each batch on a background thread, pinned when the device
is a GPU, while the previous batch trains. Both give the same batches for the same order of positions, so a
run's weights do not depend on which one it got.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

RESIDENT_SHARE = 0.5  # a pool is kept on the device when it takes at most this share of its free memory
CHUNK = 8192  # images per read when a whole pool or subset is gathered


@dataclass(frozen=True)
class Part:
    """One source array (N, 3, H, W) uint8: in memory, or a memory-mapped ``.npy`` file read with ``pread``."""

    array: np.ndarray

    @cached_property
    def mapped(self) -> bool:
        """A whole ``.npy`` file mapped (a slice of a memmap keeps the file's name and offset: not one)."""
        a = self.array
        if not isinstance(a, np.memmap) or a.filename is None:
            return False
        try:
            return os.path.getsize(a.filename) == a.offset + a.nbytes and a.flags.c_contiguous
        except OSError:
            return False

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = array[rows[i]]``; from a file, one ``pread`` per run of consecutive rows."""
        if not self.mapped or not len(rows):
            out[:] = self.array[rows]
            return
        row_bytes = int(np.prod(self.array.shape[1:]))
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered) != 1) + 1, [len(rows)]])
        buffer = np.empty_like(out)
        flat = memoryview(buffer).cast("B")
        fd = os.open(self.array.filename, os.O_RDONLY)
        try:
            for first, stop in zip(starts[:-1].tolist(), starts[1:].tolist()):
                begin, end = first * row_bytes, stop * row_bytes
                offset = self.array.offset + int(ordered[first]) * row_bytes
                while begin < end:  # a read may return fewer bytes than asked for
                    got = os.preadv(fd, [flat[begin:end]], offset)
                    if got <= 0:
                        raise OSError(f"{self.array.filename}: the cache file ends before image {ordered[first]}")
                    begin, offset = begin + got, offset + got
        finally:
            os.close(fd)
        out[order] = buffer


class Pool:
    """``rows`` (int64, in pool order) index the concatenation of ``parts``."""

    def __init__(self, parts: list[np.ndarray], rows: np.ndarray) -> None:
        self.parts = [Part(a) for a in parts]
        self.starts = np.cumsum([0] + [len(a) for a in parts])
        self.rows = np.asarray(rows, np.int64)
        self.image_shape = tuple(parts[0].shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.image_shape))

    def take(self, positions) -> torch.Tensor:
        """uint8 (len(positions), 3, H, W) on the host: the images at these pool positions, in their order."""
        positions = positions.cpu().numpy() if isinstance(positions, torch.Tensor) else np.asarray(positions)
        rows = self.rows[positions.astype(np.int64)]
        out = np.empty((len(rows), *self.image_shape), np.uint8)
        for part, start, stop in zip(self.parts, self.starts[:-1], self.starts[1:]):
            where = np.flatnonzero((rows >= start) & (rows < stop))
            if len(where):
                got = np.empty((len(where), *self.image_shape), np.uint8)
                part.read(rows[where] - start, got)
                out[where] = got
        return torch.from_numpy(out)

    def __getitem__(self, key) -> torch.Tensor:
        """Images by a slice or an index array of pool positions (what health sampling and calibration use)."""
        if isinstance(key, int | np.integer):
            return self.take([key])[0]
        if isinstance(key, slice):
            key = np.arange(len(self))[key]
        return self.take(key)

    def resident(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The whole pool as one uint8 tensor on ``device``, gathered a chunk at a time."""
        out = torch.empty(self.shape, dtype=torch.uint8, device=device)
        for i in range(0, len(self), CHUNK):
            out[i : i + CHUNK] = self.take(np.arange(i, min(i + CHUNK, len(self)))).to(device)
        return out

    def fits(self, device: torch.device) -> bool:
        """Whether the pool takes at most ``RESIDENT_SHARE`` of the device's free memory."""
        return self.nbytes <= RESIDENT_SHARE * free_memory(device)

    def on(self, device: torch.device, mode: str = "auto") -> torch.Tensor | StreamedPool:
        """What pretraining reads: the pool on ``device`` (mode ``resident``, or ``auto`` when it fits), else a
        ``StreamedPool`` (mode ``stream``, or ``auto`` when it does not)."""
        if mode == "resident" or (mode == "auto" and self.fits(device)):
            return self.resident(device)
        return StreamedPool(self, device)


class StreamedPool:
    """A pool that stays where it is; ``batches`` reads each batch while the one before trains."""

    def __init__(self, pool: Pool, device: torch.device) -> None:
        self.pool, self.device = pool, torch.device(device)

    def __len__(self) -> int:
        return len(self.pool)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pool.shape

    def __getitem__(self, key) -> torch.Tensor:
        return self.pool[key]

    def batches(self, order: torch.Tensor, batch: int, steps: int) -> Iterator[torch.Tensor]:
        """``steps`` batches of ``batch`` images, the positions ``order[k * batch : (k + 1) * batch]``, on the
        device; the next batch is read (and pinned, for a GPU) on a thread while the caller uses this one."""
        order = order.cpu()
        pin = self.device.type == "cuda"

        def read(k: int) -> torch.Tensor:
            x = self.pool.take(order[k * batch : (k + 1) * batch])
            return x.pin_memory() if pin else x

        if steps <= 0:
            return
        with ThreadPoolExecutor(max_workers=1) as reader:
            ahead = reader.submit(read, 0)
            for k in range(steps):
                x = ahead.result()
                if k + 1 < steps:
                    ahead = reader.submit(read, k + 1)
                yield x.to(self.device, non_blocking=True)


def on_device_if_it_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images`` moved to ``device`` when they take at most ``RESIDENT_SHARE`` of its free memory, else as they
    are (the host's, perhaps memory-mapped: each batch is moved where it is used)."""
    device = torch.device(device)
    if images.device == device or images.numel() > RESIDENT_SHARE * free_memory(device):
        return images
    return images.to(device)


def free_memory(device: torch.device) -> int:
    """Free bytes of a CUDA device, or the host's available memory (``MemAvailable``) for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
