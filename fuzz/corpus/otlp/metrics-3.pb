
T
R

attr.0.api850	:û¢Ùù%

	tenant.id:xM-›á


attr.1.105
checkout565