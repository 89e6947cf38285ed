"""Every file check happens here: frames, DICOM, video, manifests, importers, overlays."""
