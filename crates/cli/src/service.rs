//! `twill service ...` and `twill bpf lb list`: services as users write
//! them, on the command line or as Kubernetes YAML, and what the kernel's
//! service maps hold.

use clap::Subcommand;
use twill_api::{BpfLbFrontend, Client, PolicyFile, Request, ServiceCreate, ServiceInfo, ServicesImported};

use crate::{read_input, show, table::Table, OutputArg};

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Create (or replace) a service: a virtual address balanced over
    /// backends in the kernel, without kube-proxy.
    Create(Box<CreateArgs>),
    /// Import Kubernetes Service and EndpointSlice YAML ("-" for stdin):
    /// every document is checked first, then all are applied or none.
    Import {
        #[arg(required = true)]
        files: Vec<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// List services (all namespaces unless --namespace is given).
    List {
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show one service with its frontends and current backends.
    Get {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Delete a service (or --all of the namespace's); its virtual
    /// address stops answering.
    Delete {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every service of the namespace.
        #[arg(long)]
        all: bool,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    name: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The virtual address, IP:PORT[/tcp|/udp]. Without it a ClusterIP
    /// is allocated from the agent's service CIDR (give --port).
    #[arg(long)]
    frontend: Option<String>,
    /// The port of an allocated ClusterIP, PORT[/tcp|/udp].
    #[arg(long)]
    port: Option<String>,
    /// The backends' port: a number, or a named port of the selected
    /// endpoints. Defaults to the frontend's port.
    #[arg(long)]
    target_port: Option<String>,
    /// A backend, IP:PORT; repeat for more.
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// Backends are this namespace's endpoints with these labels
    /// (k=v,...), followed as endpoints come, go and change labels.
    #[arg(long, value_delimiter = ',')]
    selector: Vec<String>,
    /// ClusterIP or NodePort.
    #[arg(long = "type", value_parser = ["ClusterIP", "NodePort"])]
    service_type: Option<String>,
    /// The node port of a NodePort service (allocated when absent).
    #[arg(long)]
    node_port: Option<u16>,
    /// How a backend is chosen for a new connection.
    #[arg(long, value_parser = ["random", "maglev"])]
    algorithm: Option<String>,
    /// Session affinity: connections of one client go to one backend.
    #[arg(long, value_parser = ["client-ip"])]
    affinity: Option<String>,
    /// How long affinity lasts after the client's last connection
    /// (seconds, or 90s, 10m, 3h; default 3h as Kubernetes).
    #[arg(long)]
    affinity_timeout: Option<String>,
    /// The service's own labels, k=v (for policies selecting services).
    #[arg(short, long, value_delimiter = ',')]
    labels: Vec<String>,
    #[command(flatten)]
    out: OutputArg,
}

pub fn run(client: &Client, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create(args) => {
            let CreateArgs {
                name,
                namespace,
                frontend,
                port,
                target_port,
                backends,
                selector,
                service_type,
                node_port,
                algorithm,
                affinity,
                affinity_timeout,
                labels,
                out,
            } = *args;
            let request = ServiceCreate {
                name,
                namespace,
                frontend,
                port,
                target_port,
                backends,
                selector,
                service_type,
                node_port,
                algorithm,
                affinity,
                affinity_timeout,
                labels,
            };
            let service: ServiceInfo = client.call(&Request::ServiceCreate(request))?;
            show(out, &service, |s| print_services(std::slice::from_ref(s)));
        }
        ServiceCmd::Import { files, out } => {
            let files = files
                .iter()
                .map(|f| Ok(PolicyFile { name: f.clone(), content: read_input(f)? }))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let done: ServicesImported = client.call(&Request::ServiceImport { files })?;
            show(out, &done, |d| println!("Imported {} services", d.services.len()));
        }
        ServiceCmd::List { namespace, out } => {
            let services: Vec<ServiceInfo> = client.call(&Request::ServiceList { namespace })?;
            show(out, &services, |s| print_services(s));
        }
        ServiceCmd::Get { name, namespace, out } => {
            let service: ServiceInfo = client.call(&Request::ServiceGet { name, namespace })?;
            show(out, &service, print_service);
        }
        ServiceCmd::Delete { name: Some(name), all: false, namespace } => {
            let service: ServiceInfo =
                client.call(&Request::ServiceDelete { name, namespace, all: false })?;
            println!("Deleted service {}/{} ({})", service.namespace, service.name, service.cluster_ip);
        }
        ServiceCmd::Delete { namespace, .. } => {
            let done: ServicesImported =
                client.call(&Request::ServiceDelete { name: String::new(), namespace, all: true })?;
            println!("Deleted {} services", done.services.len());
        }
    }
    Ok(())
}

fn ports_cell(s: &ServiceInfo) -> String {
    s.ports
        .iter()
        .map(|p| match p.node_port {
            Some(n) => format!("{}:{}/{}", p.port, n, p.protocol),
            None => format!("{}/{}", p.port, p.protocol),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn print_services(services: &[ServiceInfo]) {
    let mut t = Table::new(&["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "BACKENDS", "SELECTOR"]);
    for s in services {
        let backends: usize = s.frontends.iter().filter(|f| !f.node_port).map(|f| f.backends.len()).sum();
        let selector: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            s.namespace.clone(),
            s.name.clone(),
            s.service_type.clone(),
            s.cluster_ip.clone(),
            ports_cell(s),
            backends.to_string(),
            if selector.is_empty() { "<none>".into() } else { selector.join(",") },
        ]);
    }
    t.print();
}

fn print_service(s: &ServiceInfo) {
    println!("Service:      {}/{}", s.namespace, s.name);
    println!("Type:         {}", s.service_type);
    println!("ClusterIP:    {}", s.cluster_ip);
    println!("Ports:        {}", ports_cell(s));
    println!("Algorithm:    {}", s.algorithm);
    if s.affinity_timeout > 0 {
        println!("Affinity:     ClientIP, {} s", s.affinity_timeout);
    }
    let mut t = Table::new(&["FRONTEND", "BACKENDS"]);
    for f in &s.frontends {
        let backends = if f.backends.is_empty() { "<none>".to_string() } else { f.backends.join("\n") };
        t.row(vec![f.address.clone(), backends]);
    }
    t.print();
}

/// `twill bpf lb list`.
pub fn bpf_lb_list(client: &Client, out: OutputArg) -> anyhow::Result<()> {
    let frontends: Vec<BpfLbFrontend> = client.call(&Request::BpfLbList)?;
    show(out, &frontends, |list| {
        let mut t = Table::new(&["FRONTEND", "ID", "ALGORITHM", "MAGLEV", "AFFINITY", "BACKENDS"]);
        for f in list {
            let backends = if f.backends.is_empty() { "<none>".to_string() } else { f.backends.join("\n") };
            t.row(vec![
                f.frontend.clone(),
                f.rev_nat_index.to_string(),
                f.algorithm.clone(),
                if f.maglev_table_size > 0 { f.maglev_table_size.to_string() } else { "-".into() },
                if f.affinity_timeout > 0 { format!("{}s", f.affinity_timeout) } else { "-".into() },
                backends,
            ]);
        }
        t.print();
    });
    Ok(())
}
