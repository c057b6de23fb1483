{{/* Names are cut to 63 characters (DNS label) as Kubernetes requires for many of them. */}}
{{- define "rds-valet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rds-valet.injector.name" -}}
{{- printf "%s-injector" (include "rds-valet.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rds-valet.provisioner.name" -}}
{{- printf "%s-provisioner" (include "rds-valet.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "rds-valet.provisioner.serviceAccount" -}}
{{- default (include "rds-valet.provisioner.name" .) .Values.provisioner.serviceAccount.name -}}
{{- end -}}

{{- define "rds-valet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "rds-valet.injector.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{- define "rds-valet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "rds-valet.kubernetesVersion" -}}
{{- default .Capabilities.KubeVersion.Version .Values.kubernetesVersion -}}
{{- end -}}

{{/* true when certificates come from cert-manager */}}
{{- define "rds-valet.useCertManager" -}}
{{- $v := toString .Values.certificates.certManager -}}
{{- if or (eq $v "true") (and (eq $v "auto") (.Capabilities.APIVersions.Has "cert-manager.io/v1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "rds-valet.injector.tlsSecret" -}}
{{- printf "%s-tls" (include "rds-valet.injector.name" .) -}}
{{- end -}}

{{/* Hardened container security context shared by every container of the chart. */}}
{{- define "rds-valet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "rds-valet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod spec of the provisioner Job and CronJob; args: root, command, specCM. */}}
{{- define "rds-valet.provisioner.podSpec" -}}
{{- $p := .root.Values.provisioner -}}
serviceAccountName: {{ include "rds-valet.provisioner.serviceAccount" .root }}
restartPolicy: Never
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "rds-valet.podSecurityContext" .root | nindent 2 }}
containers:
  - name: provisioner
    image: {{ include "rds-valet.image" .root | quote }}
    imagePullPolicy: {{ .root.Values.image.pullPolicy }}
    command: ["/usr/local/bin/provisioner"]
    args:
      - {{ .command }}
      - -f
      - /etc/rds-valet/spec/database.yaml
      {{- if not $p.dbUsers.enabled }}
      - --skip-db-users
      {{- else if $p.dbUsers.caBundle }}
      - --db-ca-file
      - /etc/rds-valet/db-ca/ca.pem
      {{- end }}
      {{- range $p.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    {{- with $p.env }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    resources:
      {{- toYaml $p.resources | nindent 6 }}
    securityContext:
      {{- include "rds-valet.containerSecurityContext" .root | nindent 6 }}
    volumeMounts:
      - name: spec
        mountPath: /etc/rds-valet/spec
        readOnly: true
      # Writable scratch for --config-out / --configmap-out; the root filesystem is read-only.
      - name: out
        mountPath: /var/run/rds-valet
      {{- if and $p.dbUsers.enabled $p.dbUsers.caBundle }}
      - name: db-ca
        mountPath: /etc/rds-valet/db-ca
        readOnly: true
      {{- end }}
volumes:
  - name: out
    emptyDir:
      sizeLimit: 16Mi
  - name: spec
    configMap:
      name: {{ .specCM }}
      items:
        - key: database.yaml
          path: database.yaml
  {{- if and $p.dbUsers.enabled $p.dbUsers.caBundle }}
  - name: db-ca
    configMap:
      name: {{ include "rds-valet.provisioner.name" .root }}-db-ca
  {{- end }}
{{- end -}}
