from .pipeline_infinite_id import (
    InfiniteIDPipeline,
    InfiniteIDPipelineOutput,
    InfiniteIDStableDiffusionPipeline,
    InfiniteIDStableDiffusionXLPipeline,
)

__all__ = [
    "InfiniteIDPipeline",
    "InfiniteIDPipelineOutput",
    "InfiniteIDStableDiffusionPipeline",
    "InfiniteIDStableDiffusionXLPipeline",
]
