"""The SensorThings router: service root, reads, writes (the app mounts this one)."""

from fastapi import APIRouter

from sensing.sta import read, root, write

router = APIRouter()
for part in (root.router, write.router, read.router):
    router.include_router(part)
